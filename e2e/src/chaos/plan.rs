//! The random plan of a round: a seeded generator and the operations
//! (create, update, delete, relabel) it picks.

use super::{Config, Expected};

/// A small seeded generator (xorshift64*): the schedule needs
/// repeatability, not cryptographic randomness.
#[derive(Clone, Debug)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub(super) fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }

    /// Uniform in `[0, 1)`.
    pub(super) fn unit(&mut self) -> f64 {
        // 53 random bits: exact in an f64.
        #[allow(clippy::cast_precision_loss, reason = "53 bits fit an f64 exactly")]
        let v = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        v
    }
}

/// One planned operation on tenant `tenant`'s object `name`.
#[derive(Clone, Debug)]
pub(super) enum Op {
    Create {
        tenant: usize,
        name: String,
        value: String,
    },
    Update {
        tenant: usize,
        name: String,
        value: String,
    },
    Delete {
        tenant: usize,
        name: String,
    },
}

impl Op {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::Create { .. } => "creates",
            Self::Update { .. } => "updates",
            Self::Delete { .. } => "deletes",
        }
    }
}

/// Plans a round: new objects, and updates and deletes of live ones, each
/// object touched at most once per round (so that operations in flight at
/// once never race on one object).
pub(super) fn plan(
    cfg: &Config,
    rng: &mut Rng,
    expected: &Expected,
    next: &mut usize,
    round: usize,
) -> Vec<Op> {
    let mut live: Vec<(usize, String)> = expected.keys().cloned().collect();
    let mut ops = Vec::new();
    for _ in 0..cfg.ops_per_round {
        let roll = rng.unit();
        // More creates while few objects live, more changes later.
        if live.is_empty() || roll < 0.4 {
            *next += 1;
            ops.push(Op::Create {
                tenant: rng.below(cfg.tenants),
                name: format!("o{next}"),
                value: token(rng, round),
            });
        } else {
            let (tenant, name) = live.swap_remove(rng.below(live.len()));
            if roll < 0.8 {
                ops.push(Op::Update {
                    tenant,
                    name,
                    value: token(rng, round),
                });
            } else {
                ops.push(Op::Delete { tenant, name });
            }
        }
    }
    ops
}

/// A value nobody else would write, so that a leak scan finds only ours.
pub(super) fn token(rng: &mut Rng, round: usize) -> String {
    format!("chaosval-{round}-{:016x}{:016x}", rng.next(), rng.next())
}
