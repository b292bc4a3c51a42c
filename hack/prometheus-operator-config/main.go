// Command prometheus-operator-config prints the Prometheus configuration
// prometheus-operator generates for the ServiceMonitors in a rendered
// chart (multi-document YAML on stdin), with its own config generator, so
// that a test can scrape through exactly the relabelling the operator
// would apply. Built by hack/tools.sh against the prometheus-operator
// version in hack/versions.env.
//
//	helm template ... | prometheus-operator-config [PROMETHEUS_VERSION] > prometheus.yaml
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus-operator/prometheus-operator/pkg/assets"
	prompkg "github.com/prometheus-operator/prometheus-operator/pkg/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "prometheus-operator-config: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	version := "v2.42.0"
	if len(os.Args) > 1 {
		version = os.Args[1]
	}
	monitors := map[string]*monitoringv1.ServiceMonitor{}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(os.Stdin))
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the rendered chart: %w", err)
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil || meta.Kind != "ServiceMonitor" {
			continue
		}
		var m monitoringv1.ServiceMonitor
		if err := yaml.UnmarshalStrict(bytes.TrimSpace(doc), &m); err != nil {
			return fmt.Errorf("a ServiceMonitor the operator's types refuse: %w", err)
		}
		monitors[m.Namespace+"/"+m.Name] = &m
	}
	if len(monitors) == 0 {
		return fmt.Errorf("no ServiceMonitor on stdin")
	}
	// A Prometheus that selects every ServiceMonitor in every namespace.
	p := &monitoringv1.Prometheus{
		ObjectMeta: metav1.ObjectMeta{Name: "k8s", Namespace: "monitoring"},
		Spec: monitoringv1.PrometheusSpec{
			CommonPrometheusFields: monitoringv1.CommonPrometheusFields{
				Version:                         version,
				ServiceMonitorSelector:          &metav1.LabelSelector{},
				ServiceMonitorNamespaceSelector: &metav1.LabelSelector{},
			},
		},
	}
	cg, err := prompkg.NewConfigGenerator(slog.New(slog.NewTextHandler(os.Stderr, nil)), p)
	if err != nil {
		return fmt.Errorf("making the config generator: %w", err)
	}
	cfg, err := cg.GenerateServerConfiguration(p, monitors, nil, nil, nil, &assets.StoreBuilder{}, nil, nil, nil, nil)
	if err != nil {
		return fmt.Errorf("generating the configuration: %w", err)
	}
	_, err = os.Stdout.Write(cfg)
	return err
}
