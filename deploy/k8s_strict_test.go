package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The custom resources are not in k8s.io/api: these are the fields of their published CRDs
// that a manifest may set (KEDA 2.x keda.sh/v1alpha1, Prometheus Operator monitoring.coreos.com/v1),
// typed as the CRDs type them. A field the CRD has but the struct lacks fails the decode: add
// it here when a manifest starts using it.

type kedaScaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			APIVersion             string `json:"apiVersion,omitempty"`
			Kind                   string `json:"kind,omitempty"`
			Name                   string `json:"name"`
			EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
		} `json:"scaleTargetRef"`
		PollingInterval       *int32 `json:"pollingInterval,omitempty"`
		InitialCooldownPeriod *int32 `json:"initialCooldownPeriod,omitempty"`
		CooldownPeriod        *int32 `json:"cooldownPeriod,omitempty"`
		IdleReplicaCount      *int32 `json:"idleReplicaCount,omitempty"`
		MinReplicaCount       *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount       *int32 `json:"maxReplicaCount,omitempty"`
		Advanced              *struct {
			RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
			HorizontalPodAutoscalerConfig *struct {
				Name     string                                         `json:"name,omitempty"`
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
			ScalingModifiers *struct {
				Formula          string `json:"formula,omitempty"`
				Target           string `json:"target,omitempty"`
				ActivationTarget string `json:"activationTarget,omitempty"`
				MetricType       string `json:"metricType,omitempty"`
			} `json:"scalingModifiers,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []struct {
			Type              string            `json:"type"`
			Name              string            `json:"name,omitempty"`
			UseCachedMetrics  bool              `json:"useCachedMetrics,omitempty"`
			MetricType        string            `json:"metricType,omitempty"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
				Kind string `json:"kind,omitempty"`
			} `json:"authenticationRef,omitempty"`
		} `json:"triggers"`
		Fallback *struct {
			FailureThreshold int32  `json:"failureThreshold"`
			Replicas         int32  `json:"replicas"`
			Behavior         string `json:"behavior,omitempty"`
		} `json:"fallback,omitempty"`
	} `json:"spec"`
}

type kedaTriggerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		PodIdentity *struct {
			Provider   string `json:"provider"`
			IdentityID string `json:"identityId,omitempty"`
		} `json:"podIdentity,omitempty"`
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef,omitempty"`
		Env []struct {
			Parameter     string `json:"parameter"`
			Name          string `json:"name"`
			ContainerName string `json:"containerName,omitempty"`
		} `json:"env,omitempty"`
	} `json:"spec"`
}

type podMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		PodTargetLabels   []string             `json:"podTargetLabels,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		PodMetricsEndpoints []struct {
			Port            string              `json:"port,omitempty"`
			PortNumber      *int32              `json:"portNumber,omitempty"`
			Path            string              `json:"path,omitempty"`
			Scheme          string              `json:"scheme,omitempty"`
			Params          map[string][]string `json:"params,omitempty"`
			Interval        string              `json:"interval,omitempty"`
			ScrapeTimeout   string              `json:"scrapeTimeout,omitempty"`
			HonorLabels     bool                `json:"honorLabels,omitempty"`
			HonorTimestamps *bool               `json:"honorTimestamps,omitempty"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// apiType returns a new value of the Go type that the API server decodes apiVersion/kind
// into, or an error for a kind the deploy files are not expected to hold.
func apiType(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "v1 Namespace":
		return &corev1.Namespace{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "batch/v1 Job":
		return &batchv1.Job{}, nil
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "networking.k8s.io/v1 Ingress":
		return &networkingv1.Ingress{}, nil
	case "keda.sh/v1alpha1 ScaledObject":
		return &kedaScaledObject{}, nil
	case "keda.sh/v1alpha1 TriggerAuthentication":
		return &kedaTriggerAuthentication{}, nil
	case "monitoring.coreos.com/v1 PodMonitor":
		return &podMonitor{}, nil
	case "kustomize.config.k8s.io/v1beta1 Kustomization", "kustomize.config.k8s.io/v1alpha1 Component":
		return &types.Kustomization{}, nil
	}
	return nil, fmt.Errorf("apiVersion %q kind %q: no Go type known for it (add it to apiType)", apiVersion, kind)
}

// strictDecode decodes one YAML document the way the API server's strict field validation
// does (kubectl apply --validate=strict): YAML keys given twice, fields the type does not have
// (matched case-sensitively), and values of the wrong type are errors.
func strictDecode(doc []byte) error {
	j, err := yaml.YAMLToJSONStrict(doc) // duplicate keys fail here
	if err != nil {
		return err
	}
	var tm metav1.TypeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &tm); err != nil {
		return err
	}
	v, err := apiType(tm.APIVersion, tm.Kind)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return fmt.Errorf("%s: %w", tm.Kind, err) // a wrong type
	}
	if len(strict) > 0 {
		return fmt.Errorf("%s: %w", tm.Kind, errors.Join(strict...))
	}
	return nil
}

// yamlDocuments splits a YAML stream into its documents, leaving out empty ones.
func yamlDocuments(b []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var docs [][]byte
	for {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		var v any
		if err := yaml.Unmarshal(d, &v); err != nil {
			return nil, err
		}
		if v != nil {
			docs = append(docs, d)
		}
	}
}

// TestManifestsStrict decodes every YAML document under k8s/ (resources, patches,
// kustomizations) and every object that the kustomizations render into its Kubernetes API
// type with a strict decoder.
func TestManifestsStrict(t *testing.T) {
	t.Parallel()
	n := 0
	err := filepath.WalkDir("k8s", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") && !strings.HasSuffix(p, ".yml") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		docs, err := yamlDocuments(b)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for i, doc := range docs {
			if err := strictDecode(doc); err != nil {
				return fmt.Errorf("%s document %d: %w", p, i, err)
			}
			n++
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, n, 20, "the walk found the manifests")

	for _, dir := range kustomizations {
		objs, err := render(filesys.MakeFsOnDisk(), dir)
		require.NoError(t, err)
		for _, o := range objs {
			require.NoError(t, strictDecode(o.raw), "%s: rendered %s", dir, o)
		}
	}
}

// TestManifestsStrictRefuses shows that the strict decoder catches what a lenient one lets
// through: each case edits one real manifest and names the error it must give.
func TestManifestsStrictRefuses(t *testing.T) {
	t.Parallel()
	read := func(t *testing.T, p string) string {
		t.Helper()
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		return string(b)
	}
	for _, tc := range []struct {
		name, file, old, new, want string
	}{
		{"unknown field", "k8s/base/api.yaml", "  replicas: 2\n", "  replicas: 2\n  replica: 3\n", `unknown field "spec.replica"`},
		{"field in the wrong case", "k8s/base/api.yaml", "containerPort:", "ContainerPort:", `unknown field "spec.template.spec.containers[0].ports[0].ContainerPort"`},
		{"field at the wrong level", "k8s/base/worker.yaml", "      terminationGracePeriodSeconds:", "      containers_grace: 1\n      terminationGracePeriodSeconds:", `unknown field "spec.template.spec.containers_grace"`},
		{"duplicate field", "k8s/base/api.yaml", "  replicas: 2\n", "  replicas: 2\n  replicas: 3\n", `already set`},
		{"wrong type", "k8s/base/api.yaml", "  replicas: 2\n", "  replicas: two\n", "cannot unmarshal string into Go struct field"},
		{"bad quantity", "k8s/base/api.yaml", "memory: ", "memory: lots\n            x: ", "quantities must match"},
		{"unknown KEDA field", "k8s/base/worker-keda.yaml", "  pollingInterval: 15\n", "  pollingInterval: 15\n  pollInterval: 15\n", `unknown field "spec.pollInterval"`},
		{"KEDA number as a string", "k8s/base/worker-keda.yaml", "  maxReplicaCount: 20\n", "  maxReplicaCount: \"20\"\n", "cannot unmarshal string"},
		{"unknown kustomization field", "k8s/base/kustomization.yaml", "resources:\n", "resource:\n  - x.yaml\nresources:\n", `unknown field "resource"`},
		{"unknown kind", "k8s/base/namespace.yaml", "kind: Namespace", "kind: Namespaces", "no Go type known"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := read(t, tc.file)
			require.Contains(t, src, tc.old)
			docs, err := yamlDocuments([]byte(strings.Replace(src, tc.old, tc.new, 1)))
			require.NoError(t, err)
			var errs []error
			for _, d := range docs {
				errs = append(errs, strictDecode(d))
			}
			err = errors.Join(errs...)
			require.Error(t, err, "the edited %s decodes", tc.file)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
