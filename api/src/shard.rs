//! Which manager shard acts on which tenant namespace.
//!
//! Shard `i` of `n` owns the namespaces [`shard_of`] puts in bucket `i`: a
//! jump consistent hash (Lamping and Veach, 2014) of the namespace's name,
//! so that going from `n` to `n + 1` shards moves only a `1 / (n + 1)`
//! share. Each shard holds its own Lease ([`lease_name`]); while the count
//! changes, shards of two counts run at once, and a namespace that two of
//! them claim is acted on only by the one whose Lease was taken first
//! ([`Ownership`]). A newcomer waits for the shards it replaces to go,
//! never the other way round, so that no namespace is acted on twice and
//! none waits longer than the old shard's Lease lives.

use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

/// One share of the tenant namespaces: shard `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard {
    /// Which share, from 0.
    pub index: u32,
    /// How many shares there are (at least 1).
    pub count: u32,
}

impl Shard {
    /// The one shard of an unsharded manager.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`, if that is one (`index < count`).
    pub fn new(index: u32, count: u32) -> Option<Self> {
        (index < count).then_some(Self { index, count })
    }

    /// Whether `namespace` is in this share.
    pub fn holds(&self, namespace: &str) -> bool {
        shard_of(namespace, self.count) == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {}", self.index, self.count)
    }
}

/// The bucket (`0..count`) of `namespace` among `count` shards. Part of the
/// contract between shards: a change would move every namespace at once.
pub fn shard_of(namespace: &str, count: u32) -> u32 {
    let digest = Sha256::digest(namespace.as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    jump(u64::from_be_bytes(key), count.max(1))
}

/// Jump consistent hash: the bucket of `key` among `buckets`.
fn jump(mut key: u64, buckets: u32) -> u32 {
    let (mut bucket, mut next) = (-1i64, 0i64);
    while next < i64::from(buckets) {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // The algorithm's own float step: (b + 1) * 2^31 / ((key >> 33) + 1).
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            reason = "the published algorithm computes the next bucket in floating point"
        )]
        let jumped =
            ((bucket + 1) as f64 * (f64::from(1u32 << 31) / ((key >> 33) + 1) as f64)) as i64;
        next = jumped;
    }
    u32::try_from(bucket).unwrap_or(0)
}

/// The Lease shard `shard` holds, named from `base`: `base` itself for an
/// unsharded manager (the name it always had), else `base-<i>-of-<n>`, so
/// that the shards of two counts never share a Lease.
pub fn lease_name(base: &str, shard: Shard) -> String {
    if shard == Shard::ALL {
        base.to_owned()
    } else {
        format!("{base}-{}-of-{}", shard.index, shard.count)
    }
}

/// The shard whose Lease is named `name` ([`lease_name`]), if any.
pub fn shard_of_lease(base: &str, name: &str) -> Option<Shard> {
    if name == base {
        return Some(Shard::ALL);
    }
    let rest = name.strip_prefix(base)?.strip_prefix('-')?;
    let (index, count) = rest.split_once("-of-")?;
    // Only the spelling `lease_name` writes: no sign, no leading zero, so
    // that one shard has one Lease name.
    let parse = |s: &str| {
        (!s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0')))
        .then(|| s.parse::<u32>().ok())
        .flatten()
    };
    Shard::new(parse(index)?, parse(count)?).filter(|s| *s != Shard::ALL)
}

/// A live shard Lease: which shard holds it, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The shard.
    pub shard: Shard,
    /// When its holder took it (`spec.acquireTime`).
    pub since: Timestamp,
    /// The Lease's name, the tie-break between two taken at once.
    pub lease: String,
}

impl Claim {
    fn first(&self, other: &Claim) -> bool {
        (self.since, &self.lease) < (other.since, &other.lease)
    }
}

/// What one shard acts on, given the live claims of every shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// This shard.
    pub shard: Shard,
    /// Shards of another count whose Lease was taken before this one's:
    /// the namespaces of this share that they hold are theirs until they
    /// go.
    pub yields_to: Vec<Shard>,
}

impl Ownership {
    /// An unsharded manager: every namespace.
    pub fn all() -> Self {
        Self {
            shard: Shard::ALL,
            yields_to: Vec::new(),
        }
    }

    /// The ownership of `me` among `live` (every live shard Lease, `me`'s
    /// own among them or not): it yields to each claim of another count
    /// taken first. Shards of the same count never share a namespace.
    pub fn among(me: &Claim, live: &[Claim]) -> Self {
        let mut yields_to: Vec<Shard> = live
            .iter()
            .filter(|c| c.shard.count != me.shard.count && c.first(me))
            .map(|c| c.shard)
            .collect();
        yields_to.sort_unstable();
        yields_to.dedup();
        Self {
            shard: me.shard,
            yields_to,
        }
    }

    /// Whether this shard acts on `namespace` now.
    pub fn acts_on(&self, namespace: &str) -> bool {
        self.shard.holds(namespace) && !self.yields_to.iter().any(|s| s.holds(namespace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("tenant-{i}")).collect()
    }

    #[test]
    fn the_hash_is_the_published_one_and_stays_put() {
        // What github.com/dgryski/go-jump's `Hash` gives for the same keys
        // and bucket counts (run once with Go to check this port).
        for (key, buckets, bucket) in REFERENCE {
            assert_eq!(jump(key, buckets), bucket, "jump({key}, {buckets})");
        }
        // Pinned: a change of the hash or the key derivation moves these,
        // and with them the namespaces of every running shard.
        let pinned: Vec<u32> = ["tenant-a", "tenant-b", "tenant-c", "tenant-d"]
            .iter()
            .map(|n| shard_of(n, 4))
            .collect();
        assert_eq!(pinned, PINNED);
    }

    const REFERENCE: [(u64, u32, u32); 15] = [
        (1, 1, 0),
        (1, 7, 6),
        (1, 1000, 549),
        (42, 2, 1),
        (42, 3, 2),
        (42, 7, 2),
        (42, 1000, 571),
        (3_735_928_559, 7, 5),
        (3_735_928_559, 1000, 285),
        (u64::MAX, 2, 1),
        (u64::MAX, 7, 2),
        (u64::MAX, 1000, 313),
        (123_456_789, 3, 0),
        (123_456_789, 7, 0),
        (123_456_789, 1000, 294),
    ];

    /// `shard_of("tenant-a" ..= "tenant-d", 4)`, as first computed.
    const PINNED: [u32; 4] = [2, 2, 1, 1];

    #[test]
    fn every_namespace_has_one_shard_and_shares_are_even() {
        let all = names(4000);
        for count in [1u32, 2, 3, 4, 7] {
            let mut sizes = vec![0usize; count as usize];
            for ns in &all {
                let holders: Vec<u32> = (0..count)
                    .filter(|i| Shard { index: *i, count }.holds(ns))
                    .collect();
                assert_eq!(holders.len(), 1, "{ns} among {count}: {holders:?}");
                sizes[holders[0] as usize] += 1;
            }
            let even = all.len() / count as usize;
            for size in sizes {
                assert!(
                    size.abs_diff(even) * 10 < even,
                    "{count} shards: {size} vs {even}"
                );
            }
        }
    }

    #[test]
    fn one_more_shard_moves_only_its_own_share() {
        let all = names(4000);
        for count in 1u32..8 {
            let moved: Vec<&String> = all
                .iter()
                .filter(|ns| shard_of(ns, count) != shard_of(ns, count + 1))
                .collect();
            // Only to the new shard, and about 1 / (count + 1) of them.
            assert!(moved.iter().all(|ns| shard_of(ns, count + 1) == count));
            let share = all.len() / (count as usize + 1);
            assert!(
                moved.len().abs_diff(share) * 5 < share,
                "{count}: {}",
                moved.len()
            );
        }
    }

    #[test]
    fn lease_names_round_trip_and_nothing_else_parses() {
        let base = "syncsecret-manager";
        assert_eq!(lease_name(base, Shard::ALL), base);
        let s = Shard::new(2, 4).unwrap();
        assert_eq!(lease_name(base, s), "syncsecret-manager-2-of-4");
        assert_eq!(shard_of_lease(base, "syncsecret-manager-2-of-4"), Some(s));
        assert_eq!(shard_of_lease(base, base), Some(Shard::ALL));
        for other in [
            "syncsecret-manager-4-of-4",
            "syncsecret-manager-0-of-1",
            "syncsecret-manager-x-of-2",
            "syncsecret-manager--1-of-2",
            "syncsecret-manager-+1-of-2",
            "syncsecret-manager-1-of-",
            "syncsecret-manager-01-of-2",
            "syncsecret-manager-1-of-02",
            "syncsecret-manager-00-of-2",
            "syncsecret-manager-1",
            "syncsecret-managerx-1-of-2",
            "other-1-of-2",
        ] {
            assert_eq!(shard_of_lease(base, other), None, "{other}");
        }
        assert_eq!(Shard::new(2, 2), None);
    }

    fn claim(index: u32, count: u32, at: i64) -> Claim {
        let shard = Shard { index, count };
        Claim {
            shard,
            since: Timestamp::from_second(at).unwrap(),
            lease: lease_name("m", shard),
        }
    }

    #[test]
    fn a_newcomer_yields_and_the_shards_it_replaces_do_not() {
        // Two shards run; two of three come up beside them.
        let live = [
            claim(0, 2, 100),
            claim(1, 2, 100),
            claim(0, 3, 200),
            claim(2, 3, 201),
        ];
        let all = names(3000);
        let views: Vec<Ownership> = live.iter().map(|c| Ownership::among(c, &live)).collect();
        assert!(views[0].yields_to.is_empty() && views[1].yields_to.is_empty());
        assert_eq!(
            views[2].yields_to,
            [Shard { index: 0, count: 2 }, Shard { index: 1, count: 2 }]
        );
        // At no moment does a namespace have two actors, and the old shards
        // still cover every namespace.
        for ns in &all {
            let actors = views.iter().filter(|v| v.acts_on(ns)).count();
            assert_eq!(actors, 1, "{ns}");
        }
        // Old shard 0 goes (its Lease released): what the new ones hold of
        // its share is theirs at once; old shard 1 keeps the rest.
        let live: Vec<Claim> = live[1..].to_vec();
        let views: Vec<Ownership> = live.iter().map(|c| Ownership::among(c, &live)).collect();
        for ns in &all {
            let actors: Vec<Shard> = views
                .iter()
                .filter(|v| v.acts_on(ns))
                .map(|v| v.shard)
                .collect();
            assert!(actors.len() <= 1, "{ns}: {actors:?}");
            let left_alone = shard_of(ns, 2) == 0 && shard_of(ns, 3) == 1;
            // Shard 1 of 3 is not up yet: only its share of old shard 0's
            // namespaces waits for it.
            assert_eq!(actors.is_empty(), left_alone, "{ns}: {actors:?}");
        }
    }

    #[test]
    fn an_old_shard_restarted_late_yields_to_the_new_ones() {
        let live = [
            claim(0, 3, 200),
            claim(1, 3, 200),
            claim(2, 3, 200),
            claim(0, 2, 300),
        ];
        let late = Ownership::among(&live[3], &live);
        assert_eq!(late.yields_to.len(), 3);
        assert!(names(1000).iter().all(|ns| !late.acts_on(ns)));
        for c in &live[..3] {
            assert!(Ownership::among(c, &live).yields_to.is_empty());
        }
    }

    #[test]
    fn taken_at_once_the_lease_name_decides() {
        let live = [claim(0, 1, 100), claim(0, 2, 100), claim(1, 2, 100)];
        let single = Ownership::among(&live[0], &live);
        // "m" sorts before "m-0-of-2": the single shard keeps everything.
        assert!(single.yields_to.is_empty());
        assert_eq!(Ownership::among(&live[1], &live).yields_to, [Shard::ALL]);
    }
}
