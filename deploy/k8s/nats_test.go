package k8s

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path"
	"reflect"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/rtcsessions/rtc-sessions/internal/aggregator"
	"github.com/rtcsessions/rtc-sessions/internal/api"
	"github.com/rtcsessions/rtc-sessions/internal/authz"
	"github.com/rtcsessions/rtc-sessions/internal/config"
	"github.com/rtcsessions/rtc-sessions/internal/ingest"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
)

// podSpec is the part of a Deployment these tests read.
type podSpec struct {
	Containers []struct {
		Name         string
		VolumeMounts []struct {
			Name      string
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
		Env []struct {
			Name      string
			ValueFrom struct {
				SecretKeyRef *struct{ Name string } `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		}
		EnvFrom []struct {
			SecretRef *struct{ Name string } `yaml:"secretRef"`
		} `yaml:"envFrom"`
	}
	Volumes []struct {
		Name   string
		Secret *struct {
			SecretName string `yaml:"secretName"`
			Items      []struct{ Key, Path string }
		}
		Projected *struct {
			Sources []struct {
				Secret *struct {
					Name  string
					Items []struct{ Key, Path string }
				}
				ConfigMap *struct {
					Name  string
					Items []struct{ Key, Path string }
				} `yaml:"configMap"`
			}
		}
	}
}

// deployment returns the pod spec of the Deployment in file.
func deployment(t *testing.T, file string) podSpec {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var doc struct {
			Kind string
			Spec struct {
				Template struct {
					Spec podSpec
				}
			}
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			t.Fatalf("%s: no Deployment", file)
		} else if err != nil {
			t.Fatal(err)
		}
		if doc.Kind == "Deployment" {
			return doc.Spec.Template.Spec
		}
	}
}

// secretsOf lists every Secret a pod can read: volumes (plain and
// projected) and environment variables.
func secretsOf(p podSpec) []string {
	set := map[string]bool{}
	for _, v := range p.Volumes {
		if v.Secret != nil {
			set[v.Secret.SecretName] = true
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.Secret != nil {
					set[s.Secret.Name] = true
				}
			}
		}
	}
	for _, c := range p.Containers {
		for _, e := range c.Env {
			if e.ValueFrom.SecretKeyRef != nil {
				set[e.ValueFrom.SecretKeyRef.Name] = true
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				set[e.SecretRef.Name] = true
			}
		}
	}
	var out []string
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// mountedFiles maps every file path a projected or secret volume with
// explicit items makes visible in the container to "secret/<name>" or
// "configmap/<name>".
func mountedFiles(p podSpec) map[string]string {
	files := map[string]string{}
	for _, c := range p.Containers {
		for _, m := range c.VolumeMounts {
			for _, v := range p.Volumes {
				if v.Name != m.Name || v.Projected == nil {
					continue
				}
				for _, s := range v.Projected.Sources {
					if s.Secret != nil {
						for _, it := range s.Secret.Items {
							files[path.Join(m.MountPath, it.Path)] = "secret/" + s.Secret.Name
						}
					}
					if s.ConfigMap != nil {
						for _, it := range s.ConfigMap.Items {
							files[path.Join(m.MountPath, it.Path)] = "configmap/" + s.ConfigMap.Name
						}
					}
				}
			}
		}
	}
	return files
}

// TestEachPodMountsOnlyItsOwnSecrets: the ingest cannot read the
// aggregator's NATS password and the other way round; the NATS password
// volume projects one key only.
func TestEachPodMountsOnlyItsOwnSecrets(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"base/aggregator.yaml", []string{"rtc-nats-aggregator"}},
		{"base/ingest.yaml", []string{"rtc-ingest-tokens", "rtc-nats-ingest"}},
		{"components/ingest-sync/ingest-sync.yaml", []string{"rtc-ingest-sync-tokens", "rtc-nats-ingest"}},
		{"base/rtcapi.yaml", []string{"rtc-api-tokens", "rtc-nats-api"}},
	}
	for _, tc := range tests {
		p := deployment(t, tc.file)
		if got := secretsOf(p); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: the pod can read Secrets %q, want exactly %q", tc.file, got, tc.want)
		}
		for _, v := range p.Volumes {
			if v.Projected == nil {
				continue
			}
			for _, s := range v.Projected.Sources {
				if s.Secret != nil && len(s.Secret.Items) != 1 {
					t.Errorf("%s: projected Secret %s: want exactly one key, got %v", tc.file, s.Secret.Name, s.Secret.Items)
				}
			}
		}
	}
}

// TestNATSClientConfig: each service logs in as its own shipped user, with
// the inbox prefix its permissions allow, over TLS, with the password and
// CA files its pod actually mounts.
func TestNATSClientConfig(t *testing.T) {
	agg := aggregator.DefaultConfig()
	if err := config.Load("base/config/aggregator.yaml", aggregator.EnvPrefix, &agg); err != nil {
		t.Fatal(err)
	}
	ing, err := ingest.LoadConfig("base/config/ingest.yaml")
	if err != nil && ing.NATS.User == "" { // validation problems are TestIngestConfigLoads's business
		t.Fatal(err)
	}
	sync, err := ingest.LoadConfig("components/ingest-sync/config/ingest-sync.yaml")
	if err != nil && sync.NATS.User == "" {
		t.Fatal(err)
	}
	apiCfg, err := api.LoadConfig("base/config/rtcapi.yaml")
	if err != nil && apiCfg.NATS.User == "" {
		t.Fatal(err)
	}
	tests := []struct {
		deploy, user, secret string
		nats                 natsutil.ConnConfig
	}{
		{"base/aggregator.yaml", authz.UserAggregator, "rtc-nats-aggregator", agg.NATS},
		{"base/ingest.yaml", authz.UserIngest, "rtc-nats-ingest", ing.NATS},
		{"components/ingest-sync/ingest-sync.yaml", authz.UserIngest, "rtc-nats-ingest", sync.NATS},
		{"base/rtcapi.yaml", authz.UserAPI, "rtc-nats-api", apiCfg.NATS},
	}
	for _, tc := range tests {
		u, ok := authz.UserByName(tc.user)
		if !ok {
			t.Fatalf("no shipped user %s", tc.user)
		}
		c := tc.nats
		if c.User != u.Name || c.InboxPrefix != u.InboxPrefix {
			t.Errorf("%s: nats user %q inbox_prefix %q, want %q %q", tc.deploy, c.User, c.InboxPrefix, u.Name, u.InboxPrefix)
		}
		if c.CredsFile != "" || c.TokenFile != "" || c.NKeySeedFile != "" {
			t.Errorf("%s: nats logs in with something else than the user's password", tc.deploy)
		}
		for _, url := range c.URLs {
			if !strings.HasPrefix(url, "tls://") {
				t.Errorf("%s: nats url %s: want tls://", tc.deploy, url)
			}
		}
		files := mountedFiles(deployment(t, tc.deploy))
		if got := files[c.PasswordFile]; got != "secret/"+tc.secret {
			t.Errorf("%s: password_file %s comes from %q, want secret/%s", tc.deploy, c.PasswordFile, got, tc.secret)
		}
		if c.TLSCAFile == "" || files[c.TLSCAFile] == "" {
			t.Errorf("%s: tls_ca_file %q is not mounted (%v)", tc.deploy, c.TLSCAFile, files)
		}
	}
}

// TestNATSNetworkPolicy: clients only from rtc-sessions on 4222, routes
// only between NATS pods, monitoring only from namespace monitoring.
func TestNATSNetworkPolicy(t *testing.T) {
	var k struct {
		Namespace string
		Resources []string
	}
	b, err := os.ReadFile("nats/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	if k.Namespace != "nats" || !reflect.DeepEqual(k.Resources, []string{"networkpolicy.yaml"}) {
		t.Fatalf("nats/kustomization.yaml: namespace %q resources %v", k.Namespace, k.Resources)
	}
	var np struct {
		Kind string
		Spec struct {
			PodSelector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"podSelector"`
			PolicyTypes []string `yaml:"policyTypes"`
			Ingress     []struct {
				From []struct {
					NamespaceSelector *struct {
						MatchLabels map[string]string `yaml:"matchLabels"`
					} `yaml:"namespaceSelector"`
					PodSelector *struct {
						MatchLabels map[string]string `yaml:"matchLabels"`
					} `yaml:"podSelector"`
				}
				Ports []struct{ Port int }
			}
		}
	}
	if b, err = os.ReadFile("nats/networkpolicy.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &np); err != nil {
		t.Fatal(err)
	}
	natsPods := map[string]string{"app.kubernetes.io/name": "nats"}
	if np.Kind != "NetworkPolicy" || !reflect.DeepEqual(np.Spec.PodSelector.MatchLabels, natsPods) ||
		!reflect.DeepEqual(np.Spec.PolicyTypes, []string{"Ingress"}) {
		t.Fatalf("nats/networkpolicy.yaml: want an Ingress NetworkPolicy on the NATS pods, got %+v", np)
	}
	// port -> who may connect to it
	got := map[int][]string{}
	for _, r := range np.Spec.Ingress {
		if len(r.From) == 0 || len(r.Ports) == 0 {
			t.Fatalf("an ingress rule without from or ports lets everyone in: %+v", r)
		}
		for _, p := range r.Ports {
			for _, f := range r.From {
				switch {
				case f.NamespaceSelector != nil && f.PodSelector == nil:
					got[p.Port] = append(got[p.Port], "namespace "+f.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"])
				case f.PodSelector != nil && f.NamespaceSelector == nil && reflect.DeepEqual(f.PodSelector.MatchLabels, natsPods):
					got[p.Port] = append(got[p.Port], "nats pods")
				default:
					t.Errorf("unexpected peer %+v", f)
				}
			}
		}
	}
	want := map[int][]string{4222: {"namespace rtc-sessions"}, 6222: {"nats pods"}, 8222: {"namespace monitoring"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("NATS ingress: got %v, want %v", got, want)
	}
}

// TestNATSValuesTLSAndStorage: the Helm values turn on TLS for clients and
// routes from cert Secrets, and JetStream with file storage only.
func TestNATSValuesTLSAndStorage(t *testing.T) {
	var v struct {
		Config struct {
			Cluster struct {
				Enabled  bool
				Replicas int
				TLS      struct {
					Enabled    bool
					SecretName string `yaml:"secretName"`
				} `yaml:"tls"`
			}
			JetStream struct {
				Enabled   bool
				FileStore struct {
					PVC struct{ Size string }
				} `yaml:"fileStore"`
				MemoryStore struct{ Enabled bool } `yaml:"memoryStore"`
			} `yaml:"jetstream"`
			NATS struct {
				TLS struct {
					Enabled    bool
					SecretName string `yaml:"secretName"`
				} `yaml:"tls"`
			} `yaml:"nats"`
		}
		TLSCA struct {
			Enabled    bool
			SecretName string `yaml:"secretName"`
			Key        string
		} `yaml:"tlsCA"`
	}
	b, err := os.ReadFile("nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	c := v.Config
	if !c.NATS.TLS.Enabled || c.NATS.TLS.SecretName == "" {
		t.Error("client TLS (config.nats.tls) must be enabled from a cert Secret")
	}
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 || !c.Cluster.TLS.Enabled || c.Cluster.TLS.SecretName == "" {
		t.Error("a 3-node cluster with TLS on the routes (config.cluster.tls)")
	}
	if !v.TLSCA.Enabled || v.TLSCA.SecretName == "" || v.TLSCA.Key == "" {
		t.Error("tlsCA must name the CA Secret and key")
	}
	if !c.JetStream.Enabled || c.JetStream.FileStore.PVC.Size == "" || c.JetStream.MemoryStore.Enabled {
		t.Error("JetStream with file storage on a PVC and no memory storage")
	}
}
