package validate

import (
	"errors"
	"fmt"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	sigsjson "sigs.k8s.io/json"
)

// kinds maps every kind the manifests may contain to its Go type. A kind not
// listed here fails the validation: add it together with its real type.
var kinds = map[schema.GroupVersionKind]func() any{
	{Version: "v1", Kind: "Namespace"}:                                       func() any { return &corev1.Namespace{} },
	{Version: "v1", Kind: "ServiceAccount"}:                                  func() any { return &corev1.ServiceAccount{} },
	{Version: "v1", Kind: "Service"}:                                         func() any { return &corev1.Service{} },
	{Version: "v1", Kind: "ConfigMap"}:                                       func() any { return &corev1.ConfigMap{} },
	{Version: "v1", Kind: "Secret"}:                                          func() any { return &corev1.Secret{} },
	{Version: "v1", Kind: "PersistentVolumeClaim"}:                           func() any { return &corev1.PersistentVolumeClaim{} },
	{Group: "apps", Version: "v1", Kind: "Deployment"}:                       func() any { return &appsv1.Deployment{} },
	{Group: "apps", Version: "v1", Kind: "StatefulSet"}:                      func() any { return &appsv1.StatefulSet{} },
	{Group: "policy", Version: "v1", Kind: "PodDisruptionBudget"}:            func() any { return &policyv1.PodDisruptionBudget{} },
	{Group: "autoscaling", Version: "v2", Kind: "HorizontalPodAutoscaler"}:   func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	{Group: "networking.k8s.io", Version: "v1", Kind: "NetworkPolicy"}:       func() any { return &networkingv1.NetworkPolicy{} },
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "Role"}:        func() any { return &rbacv1.Role{} },
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBinding"}: func() any { return &rbacv1.RoleBinding{} },
	{Group: "keda.sh", Version: "v1alpha1", Kind: "ScaledObject"}:            func() any { return &kedav1alpha1.ScaledObject{} },
	{Group: "keda.sh", Version: "v1alpha1", Kind: "TriggerAuthentication"}:   func() any { return &kedav1alpha1.TriggerAuthentication{} },
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "PodMonitor"}:      func() any { return &monitoringv1.PodMonitor{} },
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}:  func() any { return &monitoringv1.ServiceMonitor{} },
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"}:  func() any { return &monitoringv1.PrometheusRule{} },
}

// DecodeStrict decodes one object's JSON into the Go type of its kind the
// way the API server's strict field validation does: an unknown or
// duplicated field, or a field in the wrong case, is an error.
func DecodeStrict(gvk schema.GroupVersionKind, data []byte) (any, error) {
	newObj, ok := kinds[gvk]
	if !ok {
		return nil, fmt.Errorf("kind %s has no Go type in this validation: add it to kinds", gvk)
	}
	obj := newObj()
	strict, err := sigsjson.UnmarshalStrict(data, obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", gvk.Kind, err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("%s: strict decoding: %w", gvk.Kind, errors.Join(strict...))
	}
	return obj, nil
}

// policyPDB is the PodDisruptionBudget type (an alias so that the tests can
// name it next to the others).
type policyPDB = policyv1.PodDisruptionBudget
