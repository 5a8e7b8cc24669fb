package deploy_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/predq/predq/internal/redisdb"
	"github.com/predq/predq/internal/tasks"
)

// The part of the Kubernetes objects that the checks read (JSON field names as in the API).

type meta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   meta   `json:"metadata"`
	raw        []byte
}

func (o object) String() string { return o.Kind + "/" + o.Metadata.Name }

// intOrString is a port given by number or by name.
type intOrString struct {
	num int
	str string
}

func (v *intOrString) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &v.num); err == nil {
		return nil
	}
	return json.Unmarshal(b, &v.str)
}

type probe struct {
	HTTPGet *struct {
		Path string      `json:"path"`
		Port intOrString `json:"port"`
	} `json:"httpGet"`
	GRPC *struct {
		Port    int     `json:"port"`
		Service *string `json:"service"`
	} `json:"grpc"`
	Exec      *struct{} `json:"exec"`
	TCPSocket *struct{} `json:"tcpSocket"`
}

type securityContext struct {
	RunAsNonRoot             *bool `json:"runAsNonRoot"`
	RunAsUser                *int  `json:"runAsUser"`
	ReadOnlyRootFilesystem   *bool `json:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
	Privileged               *bool `json:"privileged"`
	Capabilities             *struct {
		Add  []string `json:"add"`
		Drop []string `json:"drop"`
	} `json:"capabilities"`
	SeccompProfile *struct {
		Type string `json:"type"`
	} `json:"seccompProfile"`
}

type keyRef struct {
	Name     string `json:"name"`
	Key      string `json:"key"`
	Optional *bool  `json:"optional"`
}

type container struct {
	Name    string   `json:"name"`
	Image   string   `json:"image"`
	Command []string `json:"command"`
	Args    []string `json:"args"`
	Env     []struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		ValueFrom *struct {
			ConfigMapKeyRef *keyRef `json:"configMapKeyRef"`
			SecretKeyRef    *keyRef `json:"secretKeyRef"`
		} `json:"valueFrom"`
	} `json:"env"`
	EnvFrom []struct {
		Prefix       string  `json:"prefix"`
		ConfigMapRef *keyRef `json:"configMapRef"`
		SecretRef    *keyRef `json:"secretRef"`
	} `json:"envFrom"`
	Ports []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports"`
	LivenessProbe  *probe `json:"livenessProbe"`
	ReadinessProbe *probe `json:"readinessProbe"`
	StartupProbe   *probe `json:"startupProbe"`
	Resources      struct {
		Requests map[string]string `json:"requests"`
		Limits   map[string]string `json:"limits"`
	} `json:"resources"`
	SecurityContext *securityContext `json:"securityContext"`
	VolumeMounts    []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
	} `json:"volumeMounts"`
}

type podTemplate struct {
	Metadata meta `json:"metadata"`
	Spec     struct {
		Containers                    []container      `json:"containers"`
		InitContainers                []container      `json:"initContainers"`
		SecurityContext               *securityContext `json:"securityContext"`
		AutomountServiceAccountToken  *bool            `json:"automountServiceAccountToken"`
		TerminationGracePeriodSeconds *int             `json:"terminationGracePeriodSeconds"`
		Volumes                       []struct {
			Name     string    `json:"name"`
			EmptyDir *struct{} `json:"emptyDir"`
		} `json:"volumes"`
	} `json:"spec"`
}

type workload struct {
	object
	Spec struct {
		Replicas    *int           `json:"replicas"`
		Selector    *labelSelector `json:"selector"`
		Template    *podTemplate   `json:"template"`
		JobTemplate *struct {
			Spec struct{ Template podTemplate }
		} `json:"jobTemplate"`
	} `json:"spec"`
}

type labelSelector struct {
	MatchLabels map[string]string `json:"matchLabels"`
}

func (s *labelSelector) matches(labels map[string]string) bool {
	if s == nil || len(s.MatchLabels) == 0 {
		return false
	}
	for k, v := range s.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// podWorkload is a workload that runs our image, with what the checks learned about it.
type podWorkload struct {
	workload
	tmpl podTemplate
	role role
	port int
	// grpcPort is the api's gRPC port (GRPC_PORT), 0 for the other roles.
	grpcPort int
	env      map[string]string // resolved values where known
}

// renderMu serializes render: kustomize initializes and reads a global OpenAPI schema
// (kyaml/openapi) without locking, which the race detector reports for parallel builds.
var renderMu sync.Mutex

// render builds a kustomization directory in-process, as `kubectl apply -k` would.
func render(fsys filesys.FileSystem, dir string) ([]object, error) {
	renderMu.Lock()
	defer renderMu.Unlock()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(fsys, dir)
	if err != nil {
		return nil, err
	}
	var objs []object
	for _, r := range rm.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			return nil, err
		}
		var o object
		if err := json.Unmarshal(b, &o); err != nil {
			return nil, err
		}
		o.raw = b
		objs = append(objs, o)
	}
	return objs, nil
}

func decode[T any](o object) (T, error) {
	var v T
	err := json.Unmarshal(o.raw, &v)
	return v, err
}

// checkRendered checks the rendered objects of a kustomization: every workload runs one of
// our services with known variables, listens where its probes, Service, annotations and
// monitors look, and is locked down; the api is autoscaled and protected by a PDB; KEDA scales
// the worker on the pending lists of every queue.
func checkRendered(objs []object, img image, queues []string) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	find := func(kind, name string) *object {
		for i := range objs {
			if objs[i].Kind == kind && objs[i].Metadata.Name == name {
				return &objs[i]
			}
		}
		return nil
	}

	// Namespace: every namespaced object in the one namespace of the Namespace object.
	var ns string
	for _, o := range objs {
		if o.Kind == "Namespace" {
			ns = o.Metadata.Name
		}
	}
	if ns == "" {
		fail("no Namespace")
	}
	for _, o := range objs {
		if o.Kind != "Namespace" && o.Metadata.Namespace != ns {
			fail("%s is in namespace %q, not %q", o, o.Metadata.Namespace, ns)
		}
	}

	// keys of ConfigMaps and Secrets, by name.
	keys := func(kind, name string) (map[string]string, error) {
		o := find(kind, name)
		if o == nil {
			return nil, fmt.Errorf("%s %s does not exist", kind, name)
		}
		v, err := decode[struct {
			Data       map[string]string `json:"data"`
			StringData map[string]string `json:"stringData"`
			BinaryData map[string]string `json:"binaryData"`
		}](*o)
		if err != nil {
			return nil, err
		}
		out := map[string]string{}
		for k := range v.BinaryData {
			out[k] = ""
		}
		for k, x := range v.Data {
			out[k] = x
			if kind == "Secret" {
				b, err := base64.StdEncoding.DecodeString(x)
				if err != nil {
					return nil, fmt.Errorf("%s %s: key %s: %w", kind, name, k, err)
				}
				out[k] = string(b)
			}
		}
		for k, x := range v.StringData {
			out[k] = x
		}
		return out, nil
	}

	// Workloads.
	var pods []podWorkload
	images := map[string]bool{}
	for _, o := range objs {
		switch o.Kind {
		case "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod":
		default:
			continue
		}
		w, err := decode[workload](o)
		if err != nil {
			fail("%s: %v", o, err)
			continue
		}
		w.object = o
		var tmpl podTemplate
		switch {
		case o.Kind == "Pod":
			if tmpl, err = decode[podTemplate](o); err != nil {
				fail("%s: %v", o, err)
				continue
			}
		case w.Spec.Template != nil:
			tmpl = *w.Spec.Template
		case w.Spec.JobTemplate != nil:
			tmpl = w.Spec.JobTemplate.Spec.Template
		default:
			fail("%s has no pod template", o)
			continue
		}
		if len(tmpl.Spec.Containers) != 1 || len(tmpl.Spec.InitContainers) > 0 {
			fail("%s: want exactly one container (one process per pod)", o)
			if len(tmpl.Spec.Containers) == 0 {
				continue
			}
		}
		if w.Spec.Selector != nil && !w.Spec.Selector.matches(tmpl.Metadata.Labels) {
			fail("%s: its selector does not match its pod labels", o)
		}
		psc := tmpl.Spec.SecurityContext
		if psc == nil {
			psc = &securityContext{}
		}
		if tmpl.Spec.AutomountServiceAccountToken == nil || *tmpl.Spec.AutomountServiceAccountToken {
			fail("%s: set automountServiceAccountToken: false (the processes do not talk to the Kubernetes API)", o)
		}
		for _, c := range slices.Concat(tmpl.Spec.InitContainers, tmpl.Spec.Containers) {
			where := fmt.Sprintf("%s container %s", o, c.Name)
			images[c.Image] = true

			// Command.
			argv := slices.Concat(c.Command, c.Args)
			if len(c.Command) == 0 && len(c.Args) == 0 {
				argv = img.cmd
			}
			r, err := commandRole(argv, img)
			if err != nil {
				fail("%s: %v", where, err)
				continue
			}

			// Environment: names, and values where they can be known.
			env := map[string]string{}
			for _, ef := range c.EnvFrom {
				var kind string
				var ref *keyRef
				switch {
				case ef.ConfigMapRef != nil:
					kind, ref = "ConfigMap", ef.ConfigMapRef
				case ef.SecretRef != nil:
					kind, ref = "Secret", ef.SecretRef
				default:
					continue
				}
				kv, err := keys(kind, ref.Name)
				if err != nil {
					if ref.Optional == nil || !*ref.Optional {
						fail("%s: envFrom: %v", where, err)
					}
					continue
				}
				names := slices.Sorted(func(yield func(string) bool) {
					for k := range kv {
						if !yield(ef.Prefix + k) {
							return
						}
					}
				})
				errs = append(errs, checkEnvNames(fmt.Sprintf("%s (from %s %s)", where, kind, ref.Name), names)...)
				for k, v := range kv {
					env[ef.Prefix+k] = v
				}
			}
			for _, e := range c.Env {
				errs = append(errs, checkEnvNames(where, []string{e.Name})...)
				env[e.Name] = e.Value
				if e.ValueFrom == nil {
					continue
				}
				for kind, ref := range map[string]*keyRef{"ConfigMap": e.ValueFrom.ConfigMapKeyRef, "Secret": e.ValueFrom.SecretKeyRef} {
					if ref == nil {
						continue
					}
					kv, err := keys(kind, ref.Name)
					if err == nil {
						v, ok := kv[ref.Key]
						if !ok {
							err = fmt.Errorf("%s %s has no key %s", kind, ref.Name, ref.Key)
						}
						env[e.Name] = v
					}
					if err != nil && (ref.Optional == nil || !*ref.Optional) {
						fail("%s: env %s: %v", where, e.Name, err)
					}
				}
			}
			// The values load, but for the placeholders of secrets (invalid on purpose).
			for _, err := range loadProblems(env) {
				if !strings.Contains(env[problemVar(err)], placeholder) {
					fail("%s: the process would refuse its environment: %v", where, err)
				}
			}
			for _, err := range redisURLProblems(env) {
				fail("%s: the process would refuse its environment: %v", where, err)
			}
			port, err := rolePort(r, env)
			if err != nil {
				fail("%s: %v", where, err)
			}

			// Ports and probes.
			portOf := func(p intOrString) int {
				if p.str == "" {
					return p.num
				}
				for _, cp := range c.Ports {
					if cp.Name == p.str {
						return cp.ContainerPort
					}
				}
				return -1
			}
			if r != roleMigrate {
				if !slices.ContainsFunc(c.Ports, func(p struct {
					Name          string `json:"name"`
					ContainerPort int    `json:"containerPort"`
				}) bool {
					return p.ContainerPort == port
				}) {
					fail("%s (%s) listens on %d, which is not among its ports", where, r, port)
				}
				// The api serves gRPC too (GRPC_PORT): among its ports, and probed by one
				// grpc probe (grpc.health.v1), as the HTTP port is by the others.
				grpcPort, grpcProbes := 0, 0
				if r == roleAPI {
					if grpcPort, err = strconv.Atoi(cmpOr(env["GRPC_PORT"], varDefault("GRPC_PORT"))); err != nil {
						fail("%s: GRPC_PORT=%q is not a port", where, env["GRPC_PORT"])
					}
					if !slices.ContainsFunc(c.Ports, func(p struct {
						Name          string `json:"name"`
						ContainerPort int    `json:"containerPort"`
					}) bool {
						return p.ContainerPort == grpcPort
					}) {
						fail("%s (%s) serves gRPC on %d, which is not among its ports", where, r, grpcPort)
					}
				}
				probes := map[string]*probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe}
				for _, kind := range []string{"liveness", "readiness", "startup"} {
					p := probes[kind]
					if p == nil {
						if kind != "startup" || r == roleAPI {
							fail("%s (%s) has no %s probe", where, r, kind)
						}
						continue
					}
					if p.GRPC != nil && r == roleAPI && kind != "readiness" {
						grpcProbes++
						if p.GRPC.Port != grpcPort {
							fail("%s: %s probe asks gRPC port %d, but the api serves gRPC on %d", where, kind, p.GRPC.Port, grpcPort)
						}
						if p.GRPC.Service != nil && *p.GRPC.Service != "" {
							fail("%s: %s probe asks the health of %q: want the server as a whole (no service), which is SERVING while it runs", where, kind, *p.GRPC.Service)
						}
						continue
					}
					if p.HTTPGet == nil {
						fail("%s: %s probe: want httpGet (the image has no shell; a grpc probe only on the api's liveness or startup)", where, kind)
						continue
					}
					if !slices.Contains(healthPaths, p.HTTPGet.Path) {
						fail("%s: %s probe asks %s, which the %s does not serve (it serves %v)", where, kind, p.HTTPGet.Path, r, healthPaths)
					}
					if kind == "readiness" && p.HTTPGet.Path != "/health/ready" {
						fail("%s: readiness probe asks %s: want /health/ready (it checks the dependencies)", where, p.HTTPGet.Path)
					}
					if got := portOf(p.HTTPGet.Port); got != port {
						fail("%s: %s probe asks port %v, but the %s listens on %d", where, kind, p.HTTPGet.Port, r, port)
					}
				}
				if r == roleAPI && grpcProbes == 0 {
					fail("%s (%s) has no grpc probe: its gRPC server (port %d) goes unchecked", where, r, grpcPort)
				}
				if a := tmpl.Metadata.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(port) || a["prometheus.io/path"] != "/metrics" {
					fail("%s: want pod annotations prometheus.io/scrape \"true\", port %q, path /metrics", where, strconv.Itoa(port))
				}
			}

			// Locked down: non-root, read-only root, no privilege escalation, no capabilities.
			sc := c.SecurityContext
			if sc == nil {
				sc = &securityContext{}
			}
			nonRoot := cmpPtr(sc.RunAsNonRoot, psc.RunAsNonRoot)
			uid := cmpPtr(sc.RunAsUser, psc.RunAsUser)
			seccomp := sc.SeccompProfile
			if seccomp == nil {
				seccomp = psc.SeccompProfile
			}
			switch {
			case nonRoot == nil || !*nonRoot:
				fail("%s: want runAsNonRoot: true", where)
			case uid == nil || *uid == 0:
				fail("%s: want runAsUser 65532 (the image's nonroot user)", where)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				fail("%s: want readOnlyRootFilesystem: true", where)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				fail("%s: want allowPrivilegeEscalation: false", where)
			}
			if sc.Privileged != nil && *sc.Privileged {
				fail("%s: privileged", where)
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				fail("%s: want capabilities: drop [ALL], add nothing", where)
			}
			if seccomp == nil || seccomp.Type != "RuntimeDefault" && seccomp.Type != "Localhost" {
				fail("%s: want seccompProfile RuntimeDefault", where)
			}
			tmp := false
			for _, m := range c.VolumeMounts {
				if m.MountPath == "/tmp" {
					for _, v := range tmpl.Spec.Volumes {
						tmp = tmp || v.Name == m.Name && v.EmptyDir != nil
					}
				}
			}
			if !tmp {
				fail("%s: want an emptyDir at /tmp (the root filesystem is read-only)", where)
			}
			for _, res := range []string{"cpu", "memory"} {
				if c.Resources.Requests[res] == "" {
					fail("%s: no %s request", where, res)
				}
			}
			if c.Resources.Limits["memory"] == "" {
				fail("%s: no memory limit", where)
			}
			if r == roleWorker {
				grace := 30 * time.Second
				if g := tmpl.Spec.TerminationGracePeriodSeconds; g != nil {
					grace = time.Duration(*g) * time.Second
				}
				if d, err := time.ParseDuration(cmpOr(env["WORKER_SHUTDOWN_TIMEOUT"], varDefault("WORKER_SHUTDOWN_TIMEOUT"))); err == nil && grace <= d {
					fail("%s: terminationGracePeriodSeconds %s must exceed WORKER_SHUTDOWN_TIMEOUT %s", where, grace, d)
				}
			}
			pw := podWorkload{workload: w, tmpl: tmpl, role: r, port: port, env: env}
			if r == roleAPI {
				pw.grpcPort, _ = strconv.Atoi(cmpOr(env["GRPC_PORT"], varDefault("GRPC_PORT")))
			}
			pods = append(pods, pw)
		}
	}
	if len(images) > 1 {
		fail("the workloads run %d images, want our one image: %v", len(images), slices.Sorted(func(yield func(string) bool) {
			for i := range images {
				if !yield(i) {
					return
				}
			}
		}))
	}
	byRole := map[role][]podWorkload{}
	for _, p := range pods {
		byRole[p.role] = append(byRole[p.role], p)
	}
	wantKind := map[role]string{roleAPI: "Deployment", roleWorker: "Deployment", roleScheduler: "Deployment", roleMigrate: "Job"}
	for r, kind := range wantKind {
		if len(byRole[r]) != 1 || byRole[r][0].Kind != kind {
			fail("want one %s running %s, got %d workloads", kind, r, len(byRole[r]))
			return errs
		}
	}
	api, worker := byRole[roleAPI][0], byRole[roleWorker][0]

	// Autoscalers: the api on CPU; the worker only through KEDA.
	hpaFor := map[string]int{}
	for _, o := range objs {
		if o.Kind != "HorizontalPodAutoscaler" {
			continue
		}
		h, err := decode[struct {
			Spec struct {
				ScaleTargetRef struct{ Kind, Name string } `json:"scaleTargetRef"`
				MinReplicas    *int                        `json:"minReplicas"`
				MaxReplicas    int                         `json:"maxReplicas"`
				Metrics        []struct {
					Resource *struct {
						Name   string `json:"name"`
						Target struct {
							AverageUtilization *int `json:"averageUtilization"`
						} `json:"target"`
					} `json:"resource"`
				} `json:"metrics"`
			} `json:"spec"`
		}](o)
		if err != nil || o.APIVersion != "autoscaling/v2" {
			fail("%s: want autoscaling/v2 (%v)", o, err)
			continue
		}
		hpaFor[h.Spec.ScaleTargetRef.Name]++
		if h.Spec.ScaleTargetRef.Name == api.Metadata.Name {
			cpu := slices.ContainsFunc(h.Spec.Metrics, func(m struct {
				Resource *struct {
					Name   string `json:"name"`
					Target struct {
						AverageUtilization *int `json:"averageUtilization"`
					} `json:"target"`
				} `json:"resource"`
			}) bool {
				return m.Resource != nil && m.Resource.Name == "cpu" && m.Resource.Target.AverageUtilization != nil
			})
			if !cpu || h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
				fail("%s: want CPU utilization scaling of the api with minReplicas >= 2 <= maxReplicas", o)
			}
		}
	}
	if hpaFor[api.Metadata.Name] != 1 {
		fail("want one HorizontalPodAutoscaler for %s, got %d", api, hpaFor[api.Metadata.Name])
	}
	if hpaFor[worker.Metadata.Name] != 0 {
		fail("%s has a HorizontalPodAutoscaler of its own: KEDA's would fight it", worker)
	}

	// PodDisruptionBudgets for api and worker.
	for _, p := range []podWorkload{api, worker} {
		n := 0
		for _, o := range objs {
			if o.Kind != "PodDisruptionBudget" {
				continue
			}
			pdb, err := decode[struct {
				Spec struct {
					Selector *labelSelector `json:"selector"`
				} `json:"spec"`
			}](o)
			if err == nil && pdb.Spec.Selector.matches(p.tmpl.Metadata.Labels) {
				n++
			}
		}
		if n != 1 {
			fail("want one PodDisruptionBudget selecting the pods of %s, got %d", p.workload, n)
		}
	}

	// The api's Service and the Ingress in front of it.
	svcPorts := map[string]map[string]int{} // service -> port name -> container port
	for _, o := range objs {
		if o.Kind != "Service" {
			continue
		}
		svc, err := decode[struct {
			Spec struct {
				Selector map[string]string `json:"selector"`
				Ports    []struct {
					Name       string      `json:"name"`
					Port       int         `json:"port"`
					TargetPort intOrString `json:"targetPort"`
				} `json:"ports"`
			} `json:"spec"`
		}](o)
		if err != nil {
			fail("%s: %v", o, err)
			continue
		}
		sel := &labelSelector{MatchLabels: svc.Spec.Selector}
		var target *podWorkload
		for i := range pods {
			if sel.matches(pods[i].tmpl.Metadata.Labels) {
				if target != nil {
					fail("%s selects the pods of both %s and %s", o, target.workload, pods[i].workload)
				}
				target = &pods[i]
			}
		}
		if target == nil {
			fail("%s selects no pods of ours", o)
			continue
		}
		svcPorts[o.Metadata.Name] = map[string]int{}
		for _, sp := range svc.Spec.Ports {
			tp := sp.TargetPort.num
			if sp.TargetPort.str != "" {
				tp = -1
				for _, cp := range target.tmpl.Spec.Containers[0].Ports {
					if cp.Name == sp.TargetPort.str {
						tp = cp.ContainerPort
					}
				}
			} else if tp == 0 {
				tp = sp.Port
			}
			if tp != target.port && (target.role != roleAPI || tp != target.grpcPort) {
				fail("%s port %d goes to %v, but the %s listens on %d", o, sp.Port, sp.TargetPort, target.role, target.port)
			}
			svcPorts[o.Metadata.Name][sp.Name] = sp.Port
			svcPorts[o.Metadata.Name][strconv.Itoa(sp.Port)] = sp.Port
		}
	}
	for _, o := range objs {
		if o.Kind != "Ingress" {
			continue
		}
		ing, err := decode[struct {
			Spec struct {
				Rules []struct {
					HTTP struct {
						Paths []struct {
							Backend struct {
								Service struct {
									Name string `json:"name"`
									Port struct {
										Name   string `json:"name"`
										Number int    `json:"number"`
									} `json:"port"`
								} `json:"service"`
							} `json:"backend"`
						} `json:"paths"`
					} `json:"http"`
				} `json:"rules"`
			} `json:"spec"`
		}](o)
		if err != nil {
			fail("%s: %v", o, err)
			continue
		}
		for _, rule := range ing.Spec.Rules {
			for _, p := range rule.HTTP.Paths {
				s := p.Backend.Service
				port := s.Port.Name
				if port == "" {
					port = strconv.Itoa(s.Port.Number)
				}
				if _, ok := svcPorts[s.Name][port]; !ok {
					fail("%s: backend %s:%s is not a port of a Service of ours", o, s.Name, port)
				}
			}
		}
		a := o.Metadata.Annotations
		if a["nginx.ingress.kubernetes.io/proxy-buffering"] != "off" {
			fail("%s: want nginx.ingress.kubernetes.io/proxy-buffering \"off\" (job events are Server-Sent Events)", o)
		}
		if n, err := strconv.Atoi(a["nginx.ingress.kubernetes.io/proxy-read-timeout"]); err != nil || n < 600 {
			fail("%s: want nginx.ingress.kubernetes.io/proxy-read-timeout of at least 600 (seconds) for event streams", o)
		}
	}

	// The batch queue's shards (BATCH_SHARDS): api, worker and scheduler must agree, or jobs
	// go to shards that no worker drains or no loss watcher watches.
	shards := 1
	if n, err := strconv.Atoi(cmpOr(worker.env["BATCH_SHARDS"], varDefault("BATCH_SHARDS"))); err != nil || n < 1 {
		fail("%s: BATCH_SHARDS=%q is not a positive number", worker.workload, worker.env["BATCH_SHARDS"])
	} else {
		shards = n
	}
	for _, p := range pods {
		if p.role == roleMigrate {
			continue
		}
		if n, err := strconv.Atoi(cmpOr(p.env["BATCH_SHARDS"], varDefault("BATCH_SHARDS"))); err == nil && n != shards {
			fail("%s has BATCH_SHARDS=%d, but the worker %d: every api, worker and scheduler must agree", p.workload, n, shards)
		}
	}

	// KEDA: one redis trigger per queue on asynq's pending list (per shard of the batch queue,
	// tasks.BatchQueues), authenticated.
	scaled := 0
	for _, o := range objs {
		if o.Kind != "ScaledObject" {
			continue
		}
		scaled++
		so, err := decode[struct {
			Spec struct {
				ScaleTargetRef struct {
					Kind string `json:"kind"`
					Name string `json:"name"`
				} `json:"scaleTargetRef"`
				MinReplicaCount *int `json:"minReplicaCount"`
				MaxReplicaCount *int `json:"maxReplicaCount"`
				Triggers        []struct {
					Type              string            `json:"type"`
					Metadata          map[string]string `json:"metadata"`
					AuthenticationRef *struct {
						Name string `json:"name"`
					} `json:"authenticationRef"`
				} `json:"triggers"`
			} `json:"spec"`
		}](o)
		if err != nil {
			fail("%s: %v", o, err)
			continue
		}
		if so.Spec.ScaleTargetRef.Name != worker.Metadata.Name || cmpOr(so.Spec.ScaleTargetRef.Kind, "Deployment") != "Deployment" {
			fail("%s scales %s, not the worker %s", o, so.Spec.ScaleTargetRef.Name, worker.Metadata.Name)
		}
		if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 1 || so.Spec.MaxReplicaCount == nil || *so.Spec.MaxReplicaCount < *so.Spec.MinReplicaCount {
			fail("%s: want 1 <= minReplicaCount <= maxReplicaCount (a worker always runs: the scheduler's tasks need it)", o)
		}
		var lists []string
		queueRedis, redisErr := redisdb.ParseURL(worker.env["REDIS_URL"])
		for _, tr := range so.Spec.Triggers {
			if !slices.Contains([]string{"redis", "redis-sentinel", "redis-cluster"}, tr.Type) {
				fail("%s: trigger of type %s: want redis, redis-sentinel or redis-cluster", o, tr.Type)
				continue
			}
			if redisErr == nil {
				for _, err := range triggerMatchesRedis(tr.Type, tr.Metadata, tr.AuthenticationRef != nil, queueRedis) {
					fail("%s: trigger %s: %v", o, tr.Metadata["listName"], err)
				}
			}
			lists = append(lists, tr.Metadata["listName"])
			if n, err := strconv.Atoi(tr.Metadata["listLength"]); err != nil || n < 1 {
				fail("%s: trigger %s: listLength %q: want a positive number", o, tr.Metadata["listName"], tr.Metadata["listLength"])
			}
			if tr.Metadata["address"] == "" && tr.Metadata["addresses"] == "" && tr.Metadata["host"] == "" && tr.Metadata["hosts"] == "" && tr.Metadata["addressFromEnv"] == "" {
				fail("%s: trigger %s has no Redis address", o, tr.Metadata["listName"])
			}
			if tr.AuthenticationRef == nil {
				continue
			}
			ta := find("TriggerAuthentication", tr.AuthenticationRef.Name)
			if ta == nil {
				fail("%s: TriggerAuthentication %s does not exist", o, tr.AuthenticationRef.Name)
				continue
			}
			auth, err := decode[struct {
				Spec struct {
					SecretTargetRef []struct{ Parameter, Name, Key string } `json:"secretTargetRef"`
				} `json:"spec"`
			}](*ta)
			if err != nil {
				fail("%s: %v", ta, err)
			}
			for _, ref := range auth.Spec.SecretTargetRef {
				if kv, err := keys("Secret", ref.Name); err != nil {
					fail("%s: %v", ta, err)
				} else if _, ok := kv[ref.Key]; !ok {
					fail("%s: Secret %s has no key %s", ta, ref.Name, ref.Key)
				}
			}
		}
		var want []string
		for _, q := range shardedQueues(queues, shards) {
			want = append(want, "asynq:{"+q+"}:pending")
		}
		slices.Sort(want)
		slices.Sort(lists)
		if !slices.Equal(lists, want) {
			fail("%s watches the lists %q, want one trigger per queue (BATCH_SHARDS=%d): %q", o, lists, shards, want)
		}
	}
	if scaled != 1 {
		fail("want one KEDA ScaledObject (for the worker), got %d", scaled)
	}

	// A PodMonitor, when there is one, reaches every long-running role's metrics port.
	for _, o := range objs {
		if o.Kind != "PodMonitor" {
			continue
		}
		pm, err := decode[struct {
			Spec struct {
				PodMetricsEndpoints []struct {
					Port string `json:"port"`
					Path string `json:"path"`
				} `json:"podMetricsEndpoints"`
			} `json:"spec"`
		}](o)
		if err != nil {
			fail("%s: %v", o, err)
			continue
		}
		for _, p := range pods {
			if p.role == roleMigrate {
				continue
			}
			ok := false
			for _, cp := range p.tmpl.Spec.Containers[0].Ports {
				for _, ep := range pm.Spec.PodMetricsEndpoints {
					ok = ok || cp.ContainerPort == p.port && cp.Name == ep.Port && cmpOr(ep.Path, "/metrics") == "/metrics"
				}
			}
			if !ok {
				fail("%s: no endpoint scrapes /metrics on the %s's port %d", o, p.role, p.port)
			}
		}
	}
	return errs
}

// triggerMatchesRedis checks that a KEDA trigger watches the queue Redis of the worker's
// REDIS_URL: same kind (single, Sentinel, Cluster), addresses, database, master and TLS, and
// authentication when the URL has a password.
func triggerMatchesRedis(typ string, md map[string]string, auth bool, o redisdb.Options) []error {
	var errs []error
	wantType := map[string]string{redisdb.ModeSingle: "redis", redisdb.ModeSentinel: "redis-sentinel", redisdb.ModeCluster: "redis-cluster"}[o.Mode]
	if typ != wantType {
		return []error{fmt.Errorf("type %s, but REDIS_URL is a %s Redis: want %s", typ, o.Mode, wantType)}
	}
	var addrs []string
	if typ == "redis" {
		addrs = []string{md["address"]}
	} else {
		for _, a := range strings.Split(md["addresses"], ",") {
			addrs = append(addrs, strings.TrimSpace(a))
		}
	}
	slices.Sort(addrs)
	want := slices.Sorted(slices.Values(o.Addrs))
	if !slices.Equal(addrs, want) {
		errs = append(errs, fmt.Errorf("watches %v, but REDIS_URL names %v", addrs, want))
	}
	if db := cmpOr(md["databaseIndex"], "0"); db != strconv.Itoa(o.DB) {
		errs = append(errs, fmt.Errorf("databaseIndex %s, but REDIS_URL uses database %d", db, o.DB))
	}
	if typ == "redis-sentinel" && md["sentinelMaster"] != o.MasterName {
		errs = append(errs, fmt.Errorf("sentinelMaster %q, but REDIS_URL's master is %q", md["sentinelMaster"], o.MasterName))
	}
	if (md["enableTLS"] == "true") != o.TLS {
		errs = append(errs, fmt.Errorf("enableTLS %q, but REDIS_URL's TLS is %t", md["enableTLS"], o.TLS))
	}
	if o.Password != "" && !auth {
		errs = append(errs, errors.New("REDIS_URL has a password, the trigger no authenticationRef"))
	}
	return errs
}

// shardedQueues returns the queues that hold tasks when the batch queue has n shards: the
// queues of internal/tasks with batch replaced by tasks.BatchQueues(n), as the worker drains
// them (tasks.ShardQueues).
func shardedQueues(queues []string, n int) []string {
	var out []string
	for _, q := range queues {
		if q == tasks.QueueBatch {
			out = append(out, tasks.BatchQueues(n)...)
			continue
		}
		out = append(out, q)
	}
	return out
}

// placeholder marks the example values of secrets in the manifests.
const placeholder = "REPLACE-ME"

func cmpPtr[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

// workerQueues reads the queue names of WORKER_QUEUES ("critical=6,default=3,...").
func workerQueues(spec string) []string {
	var qs []string
	for _, p := range strings.Split(spec, ",") {
		if q, _, _ := strings.Cut(strings.TrimSpace(p), "="); q != "" {
			qs = append(qs, q)
		}
	}
	slices.Sort(qs)
	return qs
}

var kustomizations = []string{"k8s/base", "k8s/overlays/example", "k8s/overlays/cluster"}

func TestKustomizeRender(t *testing.T) {
	t.Parallel()
	img := dockerImage(t)
	queues := queueNames(t)
	require.Equal(t, queues, workerQueues(varDefault("WORKER_QUEUES")), "the worker drains every queue of internal/tasks by default")
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			objs, err := render(filesys.MakeFsOnDisk(), dir)
			require.NoError(t, err)
			requireNoProblems(t, checkRendered(objs, img, queues))
			for _, o := range objs {
				if o.Kind != "Deployment" {
					continue
				}
				w, err := decode[workload](o)
				require.NoError(t, err)
				c := w.Spec.Template.Spec.Containers[0]
				if q := envOf(t, objs, c)["WORKER_QUEUES"]; q != "" {
					require.Equal(t, queues, workerQueues(q), "%s: WORKER_QUEUES", o)
				}
			}
		})
	}
}

// envOf resolves the literal and envFrom values of a container (for the checks of values).
func envOf(t *testing.T, objs []object, c container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		for _, o := range objs {
			if o.Kind == "ConfigMap" && o.Metadata.Name == ef.ConfigMapRef.Name {
				cm, err := decode[struct {
					Data map[string]string `json:"data"`
				}](o)
				require.NoError(t, err)
				for k, v := range cm.Data {
					env[k] = v
				}
			}
		}
	}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	return env
}

// TestSecretPlaceholdersRefused checks that the example secrets cannot run by mistake: with
// the placeholders, the processes refuse to start, naming each secret.
func TestSecretPlaceholdersRefused(t *testing.T) {
	t.Parallel()
	for _, dir := range kustomizations {
		objs, err := render(filesys.MakeFsOnDisk(), dir)
		require.NoError(t, err)
		for _, o := range objs {
			if o.Kind != "Secret" || o.Metadata.Name != "predq-secrets" {
				continue
			}
			s, err := decode[struct {
				StringData map[string]string `json:"stringData"`
			}](o)
			require.NoError(t, err)
			var refused []string
			for _, err := range loadProblems(s.StringData) {
				refused = append(refused, problemVar(err))
			}
			require.ElementsMatch(t, []string{"SECRET_KEY", "API_KEYS", "WEBHOOK_SECRET", "MONITORING_PASSWORD"}, refused, "%s: %s", dir, o)
		}
	}
}

func TestKustomizeOverlay(t *testing.T) {
	t.Parallel()
	objs, err := render(filesys.MakeFsOnDisk(), "k8s/overlays/example")
	require.NoError(t, err)
	for _, o := range objs {
		if o.Kind == "Deployment" || o.Kind == "Job" {
			w, err := decode[workload](o)
			require.NoError(t, err)
			img := w.Spec.Template.Spec.Containers[0].Image
			require.NotContains(t, []string{"predq:dev", "predq"}, img, "%s: the overlay pins a registry image", o)
			require.Regexp(t, `:[\w.-]+$|@sha256:`, img)
		}
		if o.Kind == "Secret" {
			s, err := decode[struct {
				StringData map[string]string `json:"stringData"`
			}](o)
			require.NoError(t, err)
			if u := s.StringData["DATABASE_URL"]; u != "" {
				require.Contains(t, u, "sslmode=require", "a managed Postgres is reached over TLS")
			}
		}
	}
}

// TestKustomizeFiles parses every YAML document under k8s/ and checks that each manifest is
// used by the kustomization of its directory (a file left out is never deployed).
func TestKustomizeFiles(t *testing.T) {
	t.Parallel()
	used := map[string]bool{}
	err := filepath.WalkDir("k8s", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") && !strings.HasSuffix(p, ".yml") {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		dec := yaml.NewDecoder(f)
		for i := 0; ; i++ {
			var doc map[string]any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("%s document %d: %w", p, i, err)
			}
			if doc == nil {
				continue
			}
			if doc["apiVersion"] == nil || doc["kind"] == nil {
				return fmt.Errorf("%s document %d has no apiVersion or kind", p, i)
			}
			if k := doc["kind"]; k == "Kustomization" || k == "Component" {
				for _, field := range []string{"resources", "components"} {
					list, _ := doc[field].([]any)
					for _, r := range list {
						used[path.Clean(path.Join(path.Dir(p), fmt.Sprint(r)))] = true
					}
				}
				patches, _ := doc["patches"].([]any)
				for _, x := range patches {
					if m, ok := x.(map[string]any); ok && m["path"] != nil {
						used[path.Clean(path.Join(path.Dir(p), fmt.Sprint(m["path"])))] = true
					}
				}
			}
		}
		return nil
	})
	require.NoError(t, err)
	err = filepath.WalkDir("k8s", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Base(p) == "kustomization.yaml" {
			return err
		}
		if !used[filepath.ToSlash(p)] {
			return fmt.Errorf("%s is used by no kustomization", p)
		}
		return nil
	})
	require.NoError(t, err)
}

// TestRenderedProblems feeds broken variants of the rendered base to checkRendered.
func TestRenderedProblems(t *testing.T) {
	t.Parallel()
	img := dockerImage(t)
	queues := queueNames(t)
	base, err := render(filesys.MakeFsOnDisk(), "k8s/base")
	require.NoError(t, err)

	// mutate returns a copy of base with the JSON of kind/name edited by f.
	mutateIn := func(t *testing.T, objs []object, kind, name string, f func(m map[string]any)) []object {
		t.Helper()
		out := slices.Clone(objs)
		for i, o := range out {
			if o.Kind == kind && o.Metadata.Name == name {
				var m map[string]any
				require.NoError(t, json.Unmarshal(o.raw, &m))
				f(m)
				b, err := json.Marshal(m)
				require.NoError(t, err)
				out[i] = object{} // not into the shared maps of base
				require.NoError(t, json.Unmarshal(b, &out[i]))
				out[i].raw = b
				return out
			}
		}
		t.Fatalf("no %s/%s", kind, name)
		return nil
	}
	mutate := func(t *testing.T, kind, name string, f func(m map[string]any)) []object {
		t.Helper()
		return mutateIn(t, base, kind, name, f)
	}
	get := func(m any, keys ...any) any {
		for _, k := range keys {
			switch k := k.(type) {
			case string:
				m = m.(map[string]any)[k]
			case int:
				m = m.([]any)[k]
			}
		}
		return m
	}
	ctr := func(m map[string]any) map[string]any {
		return get(m, "spec", "template", "spec", "containers", 0).(map[string]any)
	}
	for _, tc := range []struct {
		name, kind, obj, want string
		f                     func(m map[string]any)
	}{
		{"unknown binary", "Deployment", "predq-worker", "not one of our services", func(m map[string]any) {
			ctr(m)["command"] = []any{"/app/worker-v2"}
		}},
		{"args to the worker", "Deployment", "predq-worker", "takes no arguments", func(m map[string]any) {
			ctr(m)["args"] = []any{"--concurrency=4"}
		}},
		{"unknown literal variable", "Deployment", "predq-api", "GOMAXPROCS is not in internal/config Vars", func(m map[string]any) {
			ctr(m)["env"] = append(ctr(m)["env"].([]any), map[string]any{"name": "GOMAXPROCS", "value": "2"})
		}},
		{"unknown ConfigMap key", "ConfigMap", "predq-config", "WORKER_THREADS is not in internal/config Vars", func(m map[string]any) {
			m["data"].(map[string]any)["WORKER_THREADS"] = "4"
		}},
		{"unknown Secret key", "Secret", "predq-secrets", "REDIS_PASSWORD is not in internal/config Vars", func(m map[string]any) {
			m["stringData"].(map[string]any)["REDIS_PASSWORD"] = "x"
		}},
		{"missing ConfigMap", "Deployment", "predq-scheduler", "ConfigMap predq-settings does not exist", func(m map[string]any) {
			get(ctr(m), "envFrom", 0, "configMapRef").(map[string]any)["name"] = "predq-settings"
		}},
		{"probe path", "Deployment", "predq-api", "asks /healthz", func(m map[string]any) {
			get(ctr(m), "startupProbe", "httpGet").(map[string]any)["path"] = "/healthz"
		}},
		{"grpc probe port", "Deployment", "predq-api", "asks gRPC port 9000", func(m map[string]any) {
			get(ctr(m), "livenessProbe", "grpc").(map[string]any)["port"] = 9000
		}},
		{"no grpc probe", "Deployment", "predq-api", "has no grpc probe", func(m map[string]any) {
			ctr(m)["livenessProbe"] = map[string]any{"httpGet": map[string]any{"path": "/health/live", "port": "http"}}
		}},
		{"grpc port not among the ports", "Deployment", "predq-api", "serves gRPC on 9081", func(m map[string]any) {
			for _, e := range ctr(m)["env"].([]any) {
				if e := e.(map[string]any); e["name"] == "GRPC_PORT" {
					e["value"] = "9081"
				}
			}
		}},
		{"grpc readiness", "Deployment", "predq-api", "want httpGet", func(m map[string]any) {
			ctr(m)["readinessProbe"] = map[string]any{"grpc": map[string]any{"port": 8081}}
		}},
		{"readiness on liveness", "Deployment", "predq-worker", "readiness probe asks /health/live", func(m map[string]any) {
			get(ctr(m), "readinessProbe", "httpGet").(map[string]any)["path"] = "/health/live"
		}},
		{"probe port", "Deployment", "predq-scheduler", "listens on 9092", func(m map[string]any) {
			get(ctr(m), "livenessProbe", "httpGet").(map[string]any)["port"] = 9091
		}},
		{"port moved by the ConfigMap", "ConfigMap", "predq-config", "listens on 9191", func(m map[string]any) {
			m["data"].(map[string]any)["WORKER_METRICS_PORT"] = "9191"
		}},
		{"no startup probe on the api", "Deployment", "predq-api", "no startup probe", func(m map[string]any) {
			delete(ctr(m), "startupProbe")
		}},
		{"scrape annotation", "Deployment", "predq-worker", "prometheus.io", func(m map[string]any) {
			get(m, "spec", "template", "metadata", "annotations").(map[string]any)["prometheus.io/port"] = "8080"
		}},
		{"writable root", "Deployment", "predq-api", "readOnlyRootFilesystem", func(m map[string]any) {
			get(ctr(m), "securityContext").(map[string]any)["readOnlyRootFilesystem"] = false
		}},
		{"root user", "Job", "predq-migrate", "runAsUser 65532", func(m map[string]any) {
			get(m, "spec", "template", "spec", "securityContext").(map[string]any)["runAsUser"] = 0
		}},
		{"capabilities kept", "Deployment", "predq-scheduler", "drop [ALL]", func(m map[string]any) {
			delete(get(ctr(m), "securityContext").(map[string]any), "capabilities")
		}},
		{"escalation", "Deployment", "predq-worker", "allowPrivilegeEscalation", func(m map[string]any) {
			get(ctr(m), "securityContext").(map[string]any)["allowPrivilegeEscalation"] = true
		}},
		{"no seccomp", "Deployment", "predq-api", "seccompProfile", func(m map[string]any) {
			delete(get(m, "spec", "template", "spec", "securityContext").(map[string]any), "seccompProfile")
		}},
		{"no /tmp", "Deployment", "predq-worker", "emptyDir at /tmp", func(m map[string]any) {
			delete(ctr(m), "volumeMounts")
		}},
		{"short worker grace", "Deployment", "predq-worker", "must exceed WORKER_SHUTDOWN_TIMEOUT", func(m map[string]any) {
			get(m, "spec", "template", "spec").(map[string]any)["terminationGracePeriodSeconds"] = 10
		}},
		{"second image", "Deployment", "predq-scheduler", "images", func(m map[string]any) {
			ctr(m)["image"] = "predq:old"
		}},
		{"queue missing", "ScaledObject", "predq-worker", "one trigger per queue", func(m map[string]any) {
			tr := get(m, "spec", "triggers").([]any)
			get(m, "spec").(map[string]any)["triggers"] = tr[:len(tr)-1]
		}},
		{"wrong list", "ScaledObject", "predq-worker", "one trigger per queue", func(m map[string]any) {
			get(m, "spec", "triggers", 0, "metadata").(map[string]any)["listName"] = "asynq:critical:pending"
		}},
		{"KEDA on the api", "ScaledObject", "predq-worker", "not the worker", func(m map[string]any) {
			get(m, "spec", "scaleTargetRef").(map[string]any)["name"] = "predq-api"
		}},
		{"KEDA auth secret missing", "TriggerAuthentication", "predq-keda-redis", "Secret predq-redis does not exist", func(m map[string]any) {
			get(m, "spec", "secretTargetRef", 0).(map[string]any)["name"] = "predq-redis"
		}},
		{"HPA on memory", "HorizontalPodAutoscaler", "predq-api", "CPU utilization", func(m map[string]any) {
			get(m, "spec", "metrics", 0, "resource").(map[string]any)["name"] = "memory"
		}},
		{"PDB selects nothing", "PodDisruptionBudget", "predq-api", "PodDisruptionBudget selecting the pods of Deployment/predq-api", func(m map[string]any) {
			get(m, "spec", "selector", "matchLabels").(map[string]any)["app.kubernetes.io/component"] = "web"
		}},
		{"Service to the wrong port", "Service", "predq-api", "goes to", func(m map[string]any) {
			get(m, "spec", "ports", 0).(map[string]any)["targetPort"] = 9091
		}},
		{"buffered ingress", "Ingress", "predq", "proxy-buffering", func(m map[string]any) {
			delete(get(m, "metadata", "annotations").(map[string]any), "nginx.ingress.kubernetes.io/proxy-buffering")
		}},
		{"ingress to a missing port", "Ingress", "predq", "not a port of a Service", func(m map[string]any) {
			get(m, "spec", "rules", 0, "http", "paths", 0, "backend", "service", "port").(map[string]any)["name"] = "web"
		}},
		{"wrong namespace", "ConfigMap", "predq-config", `in namespace "default"`, func(m map[string]any) {
			get(m, "metadata").(map[string]any)["namespace"] = "default"
		}},
		{"invalid value", "ConfigMap", "predq-config", "REDIS_TTL: must be between", func(m map[string]any) {
			m["data"].(map[string]any)["REDIS_TTL"] = "5"
		}},
		{"KEDA watches another Redis", "ScaledObject", "predq-worker", "but REDIS_URL names", func(m map[string]any) {
			get(m, "spec", "triggers", 1, "metadata").(map[string]any)["address"] = "redis-cache.predq.svc.cluster.local:6379"
		}},
		{"KEDA on another database", "ScaledObject", "predq-worker", "databaseIndex 1", func(m map[string]any) {
			get(m, "spec", "triggers", 2, "metadata").(map[string]any)["databaseIndex"] = "1"
		}},
		{"queue Redis now Sentinel", "Secret", "predq-secrets", "want redis-sentinel", func(m map[string]any) {
			m["stringData"].(map[string]any)["REDIS_URL"] = "redis-sentinel://s1:26379,s2:26379/0?master=mymaster"
		}},
		{"bad Redis URL", "Secret", "predq-secrets", "needs ?master=NAME", func(m map[string]any) {
			m["stringData"].(map[string]any)["REDIS_URL"] = "redis-sentinel://s1:26379,s2:26379/0"
		}},
		{"token mounted", "Deployment", "predq-api", "automountServiceAccountToken", func(m map[string]any) {
			delete(get(m, "spec", "template", "spec").(map[string]any), "automountServiceAccountToken")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireProblem(t, checkRendered(mutate(t, tc.kind, tc.obj, tc.f), img, queues), tc.want)
		})
	}

	// The Cluster overlay shards the batch queue (BATCH_SHARDS=3): its triggers must name
	// exactly tasks.BatchQueues(3).
	cluster, err := render(filesys.MakeFsOnDisk(), "k8s/overlays/cluster")
	require.NoError(t, err)
	requireNoProblems(t, checkRendered(cluster, img, queues))
	for _, tc := range []struct {
		name, kind, obj, want string
		f                     func(m map[string]any)
	}{
		{"shard trigger missing", "ScaledObject", "predq-worker", "one trigger per queue (BATCH_SHARDS=3)", func(m map[string]any) {
			tr := get(m, "spec", "triggers").([]any)
			get(m, "spec").(map[string]any)["triggers"] = slices.Delete(slices.Clone(tr), 4, 5)
		}},
		{"wrong shard", "ScaledObject", "predq-worker", "one trigger per queue (BATCH_SHARDS=3)", func(m map[string]any) {
			get(m, "spec", "triggers", 3, "metadata").(map[string]any)["listName"] = "asynq:{batch-1}:pending"
		}},
		{"more shards than triggers", "ConfigMap", "predq-config", "one trigger per queue (BATCH_SHARDS=4)", func(m map[string]any) {
			m["data"].(map[string]any)["BATCH_SHARDS"] = "4"
		}},
	} {
		t.Run("cluster/"+tc.name, func(t *testing.T) {
			requireProblem(t, checkRendered(mutateIn(t, cluster, tc.kind, tc.obj, tc.f), img, queues), tc.want)
		})
	}
	t.Run("shards disagree", func(t *testing.T) {
		objs := mutateIn(t, cluster, "Deployment", "predq-api", func(m map[string]any) {
			ctr(m)["env"] = append(ctr(m)["env"].([]any), map[string]any{"name": "BATCH_SHARDS", "value": "2"})
		})
		requireProblem(t, checkRendered(objs, img, queues), "must agree")
	})

	t.Run("worker HPA besides KEDA", func(t *testing.T) {
		objs := mutate(t, "HorizontalPodAutoscaler", "predq-api", func(m map[string]any) {
			get(m, "spec", "scaleTargetRef").(map[string]any)["name"] = "predq-worker"
		})
		requireProblem(t, checkRendered(objs, img, queues), "KEDA's would fight it")
	})

	// The whole path, from manifests on a file system through kustomize to the checks.
	t.Run("rendered from bad manifests", func(t *testing.T) {
		fsys := filesys.MakeFsInMemory()
		for _, f := range []string{"namespace.yaml", "config.yaml", "secret.yaml", "migrate-job.yaml", "api.yaml", "ingress.yaml", "worker.yaml", "worker-keda.yaml", "scheduler.yaml", "kustomization.yaml"} {
			b, err := os.ReadFile(filepath.Join("k8s/base", f))
			require.NoError(t, err)
			if f == "scheduler.yaml" {
				b = []byte(mustReplace(t, string(b), `command: ["/app/scheduler"]`, `command: ["/app/scheduler", "--once"]`))
			}
			require.NoError(t, fsys.WriteFile(path.Join("/base", f), b))
		}
		objs, err := render(fsys, "/base")
		require.NoError(t, err)
		requireProblem(t, checkRendered(objs, img, queues), "scheduler takes no arguments")
	})
}
