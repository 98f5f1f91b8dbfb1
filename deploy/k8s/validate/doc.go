// Package validate renders the Kustomize tree of deploy/k8s (every overlay
// with every combination of the optional components) with kustomize's own
// Go API and checks every object strictly against the real API types:
// Kubernetes (k8s.io/api), KEDA's ScaledObject and the prometheus-operator's
// PodMonitor and PrometheusRule. Alert and recording rules go through
// Prometheus's rule parser, the dashboard's queries through its PromQL
// parser, and every metric they use must exist in the Go code.
//
// It is a module of its own so that these large dependencies stay out of the
// service's module; `make k8s-validate` (part of `make test`) runs it.
package validate
