package validate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

const (
	k8sDir    = ".."           // deploy/k8s
	repoRoot  = "../../.."     // the service's module
	namespace = "rtc-sessions" // every overlay's namespace
)

// components are the optional parts; every overlay is rendered with every
// subset of them.
var components = []string{"ingest-sync", "monitoring", "keda"}

// externalSecrets are created by the operator (README.md), never rendered.
var externalSecrets = map[string]bool{
	"rtc-nats-aggregator": true, "rtc-nats-ingest": true, "rtc-ingest-tokens": true, "rtc-ingest-sync-tokens": true,
	"rtc-nats-api": true, "rtc-api-tokens": true,
}

// externalConfigMaps likewise.
var externalConfigMaps = map[string]bool{"rtc-nats-ca": true}

// object is one rendered object, decoded into its real type.
type object struct {
	gvk  schema.GroupVersionKind
	name string
	ns   string
	meta metav1.ObjectMeta
	obj  any
}

func loadTree(t *testing.T) *Tree {
	t.Helper()
	tree, err := LoadTree(k8sDir)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// decodeAll decodes every rendered object strictly.
func decodeAll(t *testing.T, tree *Tree, dir string, comps []string) []object {
	t.Helper()
	m, err := tree.Render(dir, comps...)
	if err != nil {
		t.Fatal(err)
	}
	var out []object
	for _, r := range m.Resources() {
		gvk := schema.GroupVersionKind{Group: r.GetGvk().Group, Version: r.GetGvk().Version, Kind: r.GetGvk().Kind}
		data, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("%s %s: %v", gvk.Kind, r.GetName(), err)
		}
		obj, err := DecodeStrict(gvk, data)
		if err != nil {
			t.Errorf("%s %s: %v", gvk.Kind, r.GetName(), err)
			continue
		}
		var meta struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		if err := json.Unmarshal(data, &meta); err != nil {
			t.Fatal(err)
		}
		out = append(out, object{gvk: gvk, name: r.GetName(), ns: r.GetNamespace(), meta: meta.Metadata, obj: obj})
	}
	if len(out) == 0 {
		t.Fatalf("%s %v rendered nothing", dir, comps)
	}
	return out
}

func byKind[T any](objs []object) []*T {
	var out []*T
	for _, o := range objs {
		if v, ok := o.obj.(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

// partitions is topology.partitions of the aggregator's configuration.
func partitions(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(k8sDir, "base/config/aggregator.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Topology struct{ Partitions int } `json:"topology"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.Topology.Partitions <= 0 {
		t.Fatalf("base/config/aggregator.yaml: topology.partitions %d", c.Topology.Partitions)
	}
	return c.Topology.Partitions
}

// TestEveryKustomizationRenders: every directory with a kustomization
// (base, overlays, the root, nats/) renders, every object decodes strictly.
// Components render through the overlays (TestOverlays).
func TestEveryKustomizationRenders(t *testing.T) {
	tree := loadTree(t)
	dirs := tree.Dirs()
	for _, want := range []string{".", "base", "nats", "overlays/dev", "overlays/production",
		"components/ingest-sync", "components/keda", "components/monitoring"} {
		if !slices.Contains(dirs, want) {
			t.Errorf("no kustomization in %s (have %v)", want, dirs)
		}
	}
	for _, dir := range dirs {
		k, err := tree.Kustomization(dir)
		if err != nil {
			t.Fatal(err)
		}
		if k.Kind == "Component" {
			continue
		}
		t.Run(dir, func(t *testing.T) { decodeAll(t, tree, dir, nil) })
	}
}

// TestOverlays renders each overlay with every combination of components
// and checks the result.
func TestOverlays(t *testing.T) {
	tree := loadTree(t)
	parts := partitions(t)
	metrics := scanMetrics(t)
	anchors := runbookAnchors(t)
	for _, overlay := range []string{"dev", "production"} {
		for _, set := range Subsets(components) {
			var comps []string
			for _, c := range set {
				comps = append(comps, "../../components/"+c)
			}
			name := overlay + "+" + strings.Join(set, "+")
			t.Run(name, func(t *testing.T) {
				objs := decodeAll(t, tree, "overlays/"+overlay, comps)
				c := check{t: t, overlay: overlay, comps: set, objs: objs, partitions: parts, metrics: metrics, anchors: anchors}
				c.metadata()
				c.scalers()
				c.pods()
				c.configs()
				c.monitoring()
			})
		}
	}
}

// TestRootIsProduction: kubectl apply -k deploy/k8s applies the production
// overlay.
func TestRootIsProduction(t *testing.T) {
	tree := loadTree(t)
	root, err := tree.Render(".")
	if err != nil {
		t.Fatal(err)
	}
	prod, err := tree.Render("overlays/production")
	if err != nil {
		t.Fatal(err)
	}
	a, err := root.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	b, err := prod.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("deploy/k8s renders differently from overlays/production")
	}
}

type check struct {
	t          *testing.T
	overlay    string
	comps      []string
	objs       []object
	partitions int
	metrics    *Metrics
	anchors    map[string]bool
}

func (c *check) has(comp string) bool { return slices.Contains(c.comps, comp) }

func (c *check) metadata() {
	t := c.t
	seen := map[string]bool{}
	for _, o := range c.objs {
		key := o.gvk.Kind + "/" + o.name
		if seen[key] {
			t.Errorf("%s rendered twice", key)
		}
		seen[key] = true
		if o.gvk.Kind != "Namespace" && o.ns != namespace {
			t.Errorf("%s: namespace %q, want %q", key, o.ns, namespace)
		}
		if o.meta.Labels["app.kubernetes.io/part-of"] != "rtc-sessions" {
			t.Errorf("%s: no label app.kubernetes.io/part-of=rtc-sessions", key)
		}
	}
	for _, want := range []string{"Deployment/rtc-aggregator", "Deployment/rtc-ingest", "Service/rtc-ingest",
		"PodDisruptionBudget/rtc-aggregator", "PodDisruptionBudget/rtc-ingest", "HorizontalPodAutoscaler/rtc-ingest",
		"NetworkPolicy/rtc-aggregator", "NetworkPolicy/rtc-ingest",
		"Deployment/rtc-api", "Service/rtc-api", "PodDisruptionBudget/rtc-api", "HorizontalPodAutoscaler/rtc-api", "NetworkPolicy/rtc-api"} {
		if !seen[want] {
			t.Errorf("no %s", want)
		}
	}
	for comp, kinds := range map[string][]string{
		"ingest-sync": {"Deployment/rtc-ingest-sync", "PersistentVolumeClaim/rtc-ingest-sync-state", "NetworkPolicy/rtc-ingest-sync"},
		"keda":        {"ScaledObject/rtc-aggregator"},
		"monitoring":  {"PodMonitor/rtc-sessions", "PrometheusRule/rtc-sessions", "ConfigMap/rtc-sessions-dashboard"},
	} {
		for _, k := range kinds {
			if seen[k] != c.has(comp) {
				t.Errorf("%s present %v, component %s enabled %v", k, seen[k], comp, c.has(comp))
			}
		}
	}
	if seen["HorizontalPodAutoscaler/rtc-aggregator"] == c.has("keda") {
		t.Errorf("HPA rtc-aggregator present %v with keda %v: KEDA's ScaledObject must replace it", seen["HorizontalPodAutoscaler/rtc-aggregator"], c.has("keda"))
	}
}

// scalers: a Deployment an autoscaler owns has no replicas field and exactly
// one autoscaler; the others say their count; no autoscaler goes above the
// partition count for the aggregator; the dev overlay keeps one replica.
func (c *check) scalers() {
	t := c.t
	owners := map[string][]string{}
	maxOf := map[string]int32{}
	minOf := map[string]int32{}
	for _, h := range byKind[autoscalingv2.HorizontalPodAutoscaler](c.objs) {
		if h.Spec.ScaleTargetRef.Kind != "Deployment" {
			t.Errorf("HPA %s scales a %s", h.Name, h.Spec.ScaleTargetRef.Kind)
		}
		owners[h.Spec.ScaleTargetRef.Name] = append(owners[h.Spec.ScaleTargetRef.Name], "HPA/"+h.Name)
		maxOf[h.Spec.ScaleTargetRef.Name] = h.Spec.MaxReplicas
		if h.Spec.MinReplicas != nil {
			minOf[h.Spec.ScaleTargetRef.Name] = *h.Spec.MinReplicas
		}
	}
	for _, so := range byKind[kedav1alpha1.ScaledObject](c.objs) {
		owners[so.Spec.ScaleTargetRef.Name] = append(owners[so.Spec.ScaleTargetRef.Name], "ScaledObject/"+so.Name)
		maxOf[so.Spec.ScaleTargetRef.Name] = so.GetHPAMaxReplicas()
		minOf[so.Spec.ScaleTargetRef.Name] = *so.GetHPAMinReplicas()
		if err := kedav1alpha1.ValidateTriggers(so.Spec.Triggers); err != nil {
			t.Errorf("ScaledObject %s: %v", so.Name, err)
		}
		if err := kedav1alpha1.CheckReplicaCountBoundsAreValid(so); err != nil {
			t.Errorf("ScaledObject %s: %v", so.Name, err)
		}
		if err := kedav1alpha1.CheckFallbackValid(so); err != nil {
			t.Errorf("ScaledObject %s: %v", so.Name, err)
		}
		if so.Spec.Fallback != nil && so.Spec.Fallback.Replicas > so.GetHPAMaxReplicas() {
			t.Errorf("ScaledObject %s: fallback %d above max %d", so.Name, so.Spec.Fallback.Replicas, so.GetHPAMaxReplicas())
		}
		for _, tr := range so.Spec.Triggers {
			keys, err := ScalerMetadata(tr.Type)
			if err != nil {
				t.Fatal(err)
			}
			for k := range tr.Metadata {
				if _, ok := keys[k]; !ok {
					t.Errorf("ScaledObject %s: trigger %s: KEDA's scaler has no metadata key %q", so.Name, tr.Type, k)
				}
			}
			for k, required := range keys {
				if _, ok := tr.Metadata[k]; required && !ok {
					t.Errorf("ScaledObject %s: trigger %s: required metadata %q missing", so.Name, tr.Type, k)
				}
			}
			if tr.Type == "prometheus" {
				c.promql("ScaledObject "+so.Name, tr.Metadata["query"], nil)
			}
		}
	}
	deploys := map[string]*appsv1.Deployment{}
	for _, d := range byKind[appsv1.Deployment](c.objs) {
		deploys[d.Name] = d
		switch o := owners[d.Name]; {
		case len(o) > 1:
			t.Errorf("Deployment %s has %d autoscalers %v: they would fight", d.Name, len(o), o)
		case len(o) == 1 && d.Spec.Replicas != nil:
			t.Errorf("Deployment %s: replicas %d next to %s (every kubectl apply would reset the autoscaler's choice)", d.Name, *d.Spec.Replicas, o[0])
		case len(o) == 0 && d.Spec.Replicas == nil:
			t.Errorf("Deployment %s: neither replicas nor an autoscaler", d.Name)
		}
	}
	for target, o := range owners {
		if deploys[target] == nil {
			t.Errorf("%v scales Deployment %s, which is not rendered", o, target)
		}
	}
	if m := maxOf["rtc-aggregator"]; m == 0 || int(m) > c.partitions {
		t.Errorf("aggregator max replicas %d: want 1..%d (topology.partitions)", m, c.partitions)
	}
	if c.overlay == "dev" {
		for target := range owners {
			if minOf[target] != 1 || maxOf[target] != 1 {
				t.Errorf("dev: %s scales between %d and %d, want exactly 1", target, minOf[target], maxOf[target])
			}
		}
	} else if minOf["rtc-aggregator"] < 2 || minOf["rtc-ingest"] < 2 {
		t.Errorf("production: at least 2 replicas of aggregator (%d) and ingest (%d)", minOf["rtc-aggregator"], minOf["rtc-ingest"])
	}
	if d := deploys["rtc-ingest-sync"]; d != nil {
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("rtc-ingest-sync: want replicas 1 and strategy Recreate (one sync bot at a time), got %v %s", d.Spec.Replicas, d.Spec.Strategy.Type)
		}
	}
	for _, pdb := range byKind[policyPDB](c.objs) {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, d := range deploys {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				n++
				if c.overlay == "dev" && pdb.Spec.MinAvailable != nil && pdb.Spec.MinAvailable.IntValue() >= 1 {
					t.Errorf("dev: PDB %s minAvailable %s with one replica blocks every drain", pdb.Name, pdb.Spec.MinAvailable)
				}
			}
		}
		if n != 1 {
			t.Errorf("PDB %s selects %d Deployments", pdb.Name, n)
		}
	}
}

// pods: hardened, sized, every volume's source exists, every probe port
// exists, a NetworkPolicy selects every pod.
func (c *check) pods() {
	t := c.t
	cms := map[string]*corev1.ConfigMap{}
	for _, cm := range byKind[corev1.ConfigMap](c.objs) {
		cms[cm.Name] = cm
	}
	pvcs := map[string]bool{}
	for _, p := range byKind[corev1.PersistentVolumeClaim](c.objs) {
		pvcs[p.Name] = true
	}
	sas := map[string]bool{}
	for _, sa := range byKind[corev1.ServiceAccount](c.objs) {
		sas[sa.Name] = true
	}
	nps := byKind[networkingv1.NetworkPolicy](c.objs)
	for _, d := range byKind[appsv1.Deployment](c.objs) {
		where := "Deployment " + d.Name
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: selector %v does not match its pods %v", where, d.Spec.Selector, d.Spec.Template.Labels)
		}
		pod := d.Spec.Template.Spec
		if !sas[pod.ServiceAccountName] {
			t.Errorf("%s: service account %q not rendered", where, pod.ServiceAccountName)
		}
		if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: runAsNonRoot", where)
		}
		covered := false
		for _, np := range nps {
			s, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
			if err == nil && s.Matches(labels.Set(d.Spec.Template.Labels)) {
				covered = true
			}
		}
		if !covered {
			t.Errorf("%s: no NetworkPolicy selects its pods", where)
		}
		volumes := map[string]corev1.Volume{}
		for _, v := range pod.Volumes {
			volumes[v.Name] = v
			switch {
			case v.ConfigMap != nil:
				if cms[v.ConfigMap.Name] == nil && !externalConfigMaps[v.ConfigMap.Name] {
					t.Errorf("%s: volume %s: ConfigMap %s not rendered", where, v.Name, v.ConfigMap.Name)
				}
			case v.Secret != nil:
				if !externalSecrets[v.Secret.SecretName] {
					t.Errorf("%s: volume %s: Secret %s is not one of the documented ones", where, v.Name, v.Secret.SecretName)
				}
			case v.PersistentVolumeClaim != nil:
				if !pvcs[v.PersistentVolumeClaim.ClaimName] {
					t.Errorf("%s: volume %s: PVC %s not rendered", where, v.Name, v.PersistentVolumeClaim.ClaimName)
				}
			case v.Projected != nil:
				for _, s := range v.Projected.Sources {
					if s.Secret != nil && !externalSecrets[s.Secret.Name] {
						t.Errorf("%s: volume %s: Secret %s is not one of the documented ones", where, v.Name, s.Secret.Name)
					}
					if s.ConfigMap != nil && cms[s.ConfigMap.Name] == nil && !externalConfigMaps[s.ConfigMap.Name] {
						t.Errorf("%s: volume %s: ConfigMap %s not rendered", where, v.Name, s.ConfigMap.Name)
					}
				}
			}
		}
		for _, ct := range pod.Containers {
			where := where + " container " + ct.Name
			if len(ct.Command) == 0 || !strings.HasPrefix(ct.Command[0], "/usr/local/bin/") {
				t.Errorf("%s: the command must name the binary (the image has no entrypoint): %v", where, ct.Command)
			}
			sc := ct.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: want readOnlyRootFilesystem and no privilege escalation", where)
			}
			lim, ok := ct.Resources.Limits[corev1.ResourceMemory]
			if !ok || ct.Resources.Requests.Cpu().IsZero() || ct.Resources.Requests.Memory().IsZero() {
				t.Errorf("%s: want CPU and memory requests and a memory limit", where)
			}
			if strings.HasPrefix(d.Name, "rtc-ingest") && lim.Cmp(resource.MustParse("256Mi")) != 0 {
				t.Errorf("%s: memory limit %s, want 256Mi (the ingest's bounds are sized for it)", where, lim.String())
			}
			ports := map[string]bool{}
			for _, p := range ct.Ports {
				ports[p.Name] = true
			}
			for _, p := range []*corev1.Probe{ct.ReadinessProbe, ct.LivenessProbe, ct.StartupProbe} {
				if p != nil && p.HTTPGet != nil && !ports[p.HTTPGet.Port.String()] {
					t.Errorf("%s: probe on port %s, which the container does not name", where, p.HTTPGet.Port.String())
				}
			}
			if ct.ReadinessProbe == nil || ct.LivenessProbe == nil {
				t.Errorf("%s: want readiness and liveness probes", where)
			}
			for _, m := range ct.VolumeMounts {
				if _, ok := volumes[m.Name]; !ok {
					t.Errorf("%s: mount of unknown volume %s", where, m.Name)
				}
			}
		}
	}
}

// deploymentConfig is a Deployment's configuration file (from the ConfigMap
// mounted at /etc/rtc) with its RTC_* environment.
type deploymentConfig struct {
	deploy *appsv1.Deployment
	file   map[string]any
	env    map[string]string
}

func (c *check) deploymentConfigs() map[string]deploymentConfig {
	t := c.t
	cms := map[string]*corev1.ConfigMap{}
	for _, cm := range byKind[corev1.ConfigMap](c.objs) {
		cms[cm.Name] = cm
	}
	out := map[string]deploymentConfig{}
	for _, d := range byKind[appsv1.Deployment](c.objs) {
		pod := d.Spec.Template.Spec
		ct := pod.Containers[0]
		cfgPath := ct.Command[len(ct.Command)-1]
		dc := deploymentConfig{deploy: d, env: map[string]string{}}
		for _, e := range ct.Env {
			if e.ValueFrom == nil {
				dc.env[e.Name] = e.Value
			}
		}
		for _, m := range ct.VolumeMounts {
			if !strings.HasPrefix(cfgPath, m.MountPath+"/") {
				continue
			}
			for _, v := range pod.Volumes {
				if v.Name == m.Name && v.ConfigMap != nil && cms[v.ConfigMap.Name] != nil {
					data := cms[v.ConfigMap.Name].Data[strings.TrimPrefix(cfgPath, m.MountPath+"/")]
					if err := yaml.Unmarshal([]byte(data), &dc.file); err != nil {
						t.Errorf("Deployment %s: config %s: %v", d.Name, cfgPath, err)
					}
				}
			}
		}
		if dc.file == nil {
			t.Errorf("Deployment %s: its config file %s is not in a rendered ConfigMap", d.Name, cfgPath)
			continue
		}
		out[d.Name] = dc
	}
	return out
}

// get walks a YAML path.
func get(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

// value is a scalar setting: the environment override, else the file's.
func (dc deploymentConfig) value(env string, path ...string) string {
	if v, ok := dc.env[env]; ok {
		return v
	}
	switch v := get(dc.file, path...).(type) {
	case nil:
		return ""
	case []any:
		var s []string
		for _, x := range v {
			s = append(s, fmt.Sprint(x))
		}
		return strings.Join(s, ",")
	default:
		return fmt.Sprint(v)
	}
}

func containerPort(d *appsv1.Deployment, name string) int32 {
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// configs: the settings the cluster depends on, after the overlays' env.
func (c *check) configs() {
	t := c.t
	wantReplicas := map[string]string{"dev": "1", "production": "3"}[c.overlay]
	for name, dc := range c.deploymentConfigs() {
		prefix := "RTC_INGEST_"
		listenEnv, listenPath := prefix+"METRICS_ADDR", []string{"metrics_addr"}
		switch name {
		case "rtc-aggregator":
			prefix = "RTC_AGG_"
			listenEnv, listenPath = prefix+"HTTP_LISTEN", []string{"http", "listen"}
		case "rtc-api":
			prefix = "RTC_API_"
			listenEnv, listenPath = prefix+"METRICS_LISTEN", []string{"metrics_listen"}
			// The API on the pod address, on the port the Service targets.
			api := dc.value(prefix+"LISTEN", "listen")
			if host, port, err := net.SplitHostPort(api); err != nil || host != "0.0.0.0" || port != strconv.Itoa(int(containerPort(dc.deploy, "http"))) {
				t.Errorf("%s: listen %q: want 0.0.0.0:<container port \"http\" %d>", name, api, containerPort(dc.deploy, "http"))
			}
		}
		// Metrics and probes on the pod address, on the port the pod names.
		listen := dc.value(listenEnv, listenPath...)
		host, port, err := net.SplitHostPort(listen)
		if err != nil || host != "0.0.0.0" || port != strconv.Itoa(int(containerPort(dc.deploy, "metrics"))) {
			t.Errorf("%s: metrics listen %q: want 0.0.0.0:<container port \"metrics\" %d>", name, listen, containerPort(dc.deploy, "metrics"))
		}
		if name != "rtc-api" { // rtcapi creates no stream: it reads what the aggregator made
			if got := dc.value(prefix+"TOPOLOGY_REPLICAS", "topology", "replicas"); got != wantReplicas {
				t.Errorf("%s: topology.replicas %s, want %s in %s", name, got, wantReplicas, c.overlay)
			}
			if got := dc.value(prefix+"TOPOLOGY_PARTITIONS", "topology", "partitions"); got != strconv.Itoa(c.partitions) {
				t.Errorf("%s: topology.partitions %s, want %d", name, got, c.partitions)
			}
		}
		urls := strings.Split(dc.value(prefix+"NATS_URLS", "nats", "urls"), ",")
		for _, u := range urls {
			if !strings.HasPrefix(u, "tls://") {
				t.Errorf("%s: NATS URL %q without TLS", name, u)
			}
		}
		if c.overlay == "production" && len(urls) != 3 {
			t.Errorf("%s: production NATS URLs %v: want the 3 servers", name, urls)
		}
		// Sync bots: only in rtc-ingest-sync, with the token directory on a
		// writable volume.
		syncing := false
		if hs, ok := get(dc.file, "homeservers").([]any); ok {
			for _, h := range hs {
				if en, _ := get(h.(map[string]any), "sync", "enabled").(bool); en {
					syncing = true
				}
			}
		}
		if syncing != (name == "rtc-ingest-sync") {
			t.Errorf("%s: runs sync bots %v: only rtc-ingest-sync (one replica) may", name, syncing)
		}
		if name == "rtc-ingest-sync" {
			if listen := dc.value(prefix+"APPSERVICE_LISTEN_ADDR", "appservice", "listen_addr"); listen != "" {
				t.Errorf("%s: appservice listener %q: homeservers push to rtc-ingest", name, listen)
			}
			c.writableDir(dc.deploy, dc.value(prefix+"SYNC_STATE_DIR", "sync", "state_dir"))
		}
	}
}

// writableDir: dir is on a writable volume that outlives a container
// restart (the root filesystem is read-only).
func (c *check) writableDir(d *appsv1.Deployment, dir string) {
	pod := d.Spec.Template.Spec
	for _, m := range pod.Containers[0].VolumeMounts {
		if m.ReadOnly || (dir != m.MountPath && !strings.HasPrefix(dir, m.MountPath+"/")) {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && (v.PersistentVolumeClaim != nil || v.EmptyDir != nil) {
				return
			}
		}
	}
	c.t.Errorf("Deployment %s: sync.state_dir %q is not on a writable PVC or emptyDir mount", d.Name, dir)
}

// monitoring: the PodMonitor finds the pods' metrics ports; the rules parse
// with Prometheus's parser and use real metrics; the dashboard too.
func (c *check) monitoring() {
	t := c.t
	deploys := byKind[appsv1.Deployment](c.objs)
	for _, pm := range byKind[monitoringv1.PodMonitor](c.objs) {
		sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		matched := 0
		for _, d := range deploys {
			if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				t.Errorf("PodMonitor %s does not scrape Deployment %s", pm.Name, d.Name)
				continue
			}
			matched++
			if pm.Spec.JobLabel != "" && d.Spec.Template.Labels[pm.Spec.JobLabel] != d.Name {
				t.Errorf("PodMonitor %s: jobLabel %s gives job %q for %s, the rules expect %q", pm.Name, pm.Spec.JobLabel, d.Spec.Template.Labels[pm.Spec.JobLabel], d.Name, d.Name)
			}
			for _, ep := range pm.Spec.PodMetricsEndpoints {
				if ep.Port == nil || containerPort(d, *ep.Port) == 0 {
					t.Errorf("PodMonitor %s: endpoint port %v is not a port of %s", pm.Name, ep.Port, d.Name)
				}
			}
		}
		if matched == 0 {
			t.Errorf("PodMonitor %s scrapes nothing", pm.Name)
		}
	}
	for _, pr := range byKind[monitoringv1.PrometheusRule](c.objs) {
		c.rules(pr)
	}
	for _, cm := range byKind[corev1.ConfigMap](c.objs) {
		if cm.Labels["grafana_dashboard"] == "" {
			continue
		}
		for file, data := range cm.Data {
			c.dashboard(cm.Name+"/"+file, []byte(data))
		}
	}
}

var promParser = parser.NewParser(parser.Options{})

// promql parses expr and checks its metrics exist; recorded are the names
// of recording rules usable as metrics.
func (c *check) promql(where, expr string, recorded map[string]bool) {
	names, err := ExprMetrics(promParser, expr)
	if err != nil {
		c.t.Errorf("%s: %v", where, err)
		return
	}
	for _, n := range names {
		if !c.metrics.Known(n) && !External[n] && !recorded[n] {
			c.t.Errorf("%s: metric %q does not exist in the Go code (internal/, cmd/, pkg/)", where, n)
		}
	}
}

var partitionsInRule = regexp.MustCompile(`< (\d+)\b`)

func (c *check) rules(pr *monitoringv1.PrometheusRule) {
	t := c.t
	groups, err := yaml.Marshal(map[string]any{"groups": pr.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	parsed, errs := rulefmt.Parse(groups, false, model.LegacyValidation, promParser, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, err := range errs {
		t.Errorf("PrometheusRule %s: %v", pr.Name, err)
	}
	if parsed == nil {
		return
	}
	recorded := map[string]bool{}
	for _, g := range parsed.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
		}
	}
	alerts := map[string]bool{}
	for _, g := range parsed.Groups {
		for _, r := range g.Rules {
			name := r.Record + r.Alert
			c.promql("rule "+name, r.Expr, recorded)
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = true
			if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" {
				t.Errorf("alert %s: severity %q", r.Alert, sev)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("alert %s: no %s annotation", r.Alert, a)
				}
			}
			const base = "https://github.com/rtcsessions/rtc-sessions/blob/main/docs/operations.md#"
			url := r.Annotations["runbook_url"]
			if !strings.HasPrefix(url, base) || !c.anchors[strings.TrimPrefix(url, base)] {
				t.Errorf("alert %s: runbook_url %q: no such section in docs/operations.md", r.Alert, url)
			}
			if r.Alert == "RTCPartitionsUnowned" {
				m := partitionsInRule.FindStringSubmatch(r.Expr)
				if m == nil || m[1] != strconv.Itoa(c.partitions) {
					t.Errorf("alert %s: %q must compare with topology.partitions %d", r.Alert, r.Expr, c.partitions)
				}
			}
		}
	}
	for _, want := range []string{"RTCPartitionsUnowned", "RTCConsumerLagGrowing", "RTCDeadLetters", "RTCNoLiveWorkers",
		"RTCTimersLate", "RTCIngestServerErrors", "RTCIngestThrottled", "RTCIngestAuthFailures", "RTCNATSUnreachable"} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// dashboard: the JSON parses, every query parses and uses real metrics, the
// panels the operators need are there.
func (c *check) dashboard(where string, data []byte) {
	t := c.t
	var d struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&d); err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("%s: no uid or title", where)
	}
	ids := map[int]bool{}
	titles := map[string]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("%s: panel id %d twice", where, p.ID)
		}
		ids[p.ID] = true
		titles[p.Title] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", where, p.Title)
		}
		for _, tg := range p.Targets {
			c.promql(fmt.Sprintf("%s panel %q %s", where, p.Title, tg.RefID), tg.Expr, nil)
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((\w+),\s*\w+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		s, _ := q["query"].(string)
		m := labelValues.FindStringSubmatch(s)
		if m == nil || !c.metrics.Known(m[1]) {
			t.Errorf("%s: variable %s: query %q must be label_values(<existing metric>, label)", where, v.Name, s)
		}
	}
	for _, want := range []string{"Inputs/s by result", "Transitions/s by kind", "Consumer lag per partition",
		"Live sessions and members", "Batch latency", "Publish latency", "DLQ by reason", "Rejections by reason",
		"Ingest requests by status"} {
		if !titles[want] {
			t.Errorf("%s: no panel %q", where, want)
		}
	}
}

func scanMetrics(t *testing.T) *Metrics {
	t.Helper()
	var dirs []string
	for _, d := range []string{"internal", "cmd", "pkg"} {
		dirs = append(dirs, filepath.Join(repoRoot, d))
	}
	m, err := ScanMetrics(dirs...)
	if err != nil {
		t.Fatal(err)
	}
	// The scan must see the metrics the manifests are about; an empty scan
	// would let nothing through, a broken one everything wrong.
	for _, n := range []string{"rtc_aggregator_consumer_lag", "rtc_aggregator_batch_seconds_bucket", "rtc_ingest_appservice_transactions_total"} {
		if !m.Known(n) {
			t.Fatalf("the metric scan of %v misses %s (found %d names in %d files)", dirs, n, len(m.Names), m.FilesRead)
		}
	}
	return m
}

// runbookAnchors are the GitHub anchors of docs/operations.md's headings.
func runbookAnchors(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "docs/operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]bool{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if !strings.HasPrefix(line, "#") {
			continue
		}
		out[GitHubAnchor(strings.TrimLeft(line, "# "))] = true
	}
	return out
}

// GitHubAnchor is the id GitHub gives a Markdown heading: lower case,
// punctuation dropped, spaces as hyphens.
func GitHubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestGitHubAnchor(t *testing.T) {
	for in, want := range map[string]string{
		"RTCPartitionsUnowned":            "rtcpartitionsunowned",
		"Backup and replay":               "backup-and-replay",
		"`rtcctl workers`: who owns what": "rtcctl-workers-who-owns-what",
	} {
		if got := GitHubAnchor(in); got != want {
			t.Errorf("GitHubAnchor(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSubsets(t *testing.T) {
	got := Subsets([]string{"a", "b"})
	var s []string
	for _, x := range got {
		s = append(s, strings.Join(x, "+"))
	}
	sort.Strings(s)
	if want := []string{"", "a", "a+b", "b"}; !slices.Equal(s, want) {
		t.Fatalf("Subsets = %q, want %q", s, want)
	}
}
