// Command realistic is a Yoke-style flight of realistic size, built on the
// Kubernetes API types (k8s.io/api, k8s.io/apimachinery) like real flights.
//
// It reads an optional JSON object from stdin (see Values; missing or zero
// fields take defaults) and writes one JSON array of objects: ServiceAccount,
// ConfigMap, Secret, Deployment, Service, HorizontalPodAutoscaler,
// PodDisruptionBudget, NetworkPolicy and Ingress. Resources are named after
// argv[0] (the release name) and placed in $NAMESPACE.
//
// It builds both for wasip1 (the module hoist renders) and natively (the
// benchmark's baseline).
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Values are the flight's inputs, read as JSON from stdin.
type Values struct {
	Image       string            `json:"image"`
	Replicas    int32             `json:"replicas"`
	MaxReplicas int32             `json:"maxReplicas"`
	Port        int32             `json:"port"`
	Host        string            `json:"host"`
	CPU         string            `json:"cpu"`
	Memory      string            `json:"memory"`
	Env         map[string]string `json:"env"`
	Config      map[string]string `json:"config"`
	Labels      map[string]string `json:"labels"`
	Secret      map[string]string `json:"secret"`
}

func (v *Values) setDefaults(release string) {
	if v.Image == "" {
		v.Image = "ghcr.io/example/web:1.4.2"
	}
	if v.Replicas == 0 {
		v.Replicas = 2
	}
	if v.MaxReplicas < v.Replicas {
		v.MaxReplicas = max(v.Replicas*5, 10)
	}
	if v.Port == 0 {
		v.Port = 8080
	}
	if v.Host == "" {
		v.Host = release + ".example.com"
	}
	if v.CPU == "" {
		v.CPU = "100m"
	}
	if v.Memory == "" {
		v.Memory = "128Mi"
	}
	if v.Config == nil {
		v.Config = map[string]string{"LOG_LEVEL": "info", "FEATURE_X": "enabled"}
	}
	if v.Secret == nil {
		v.Secret = map[string]string{"API_TOKEN": "change-me"}
	}
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "realistic:", err)
		os.Exit(1)
	}
}

func run(stdin io.Reader, stdout io.Writer) error {
	// argv[0] is the release name under Yoke and hoist. Run natively it is a
	// path, so fall back to $YOKE_RELEASE (which Yoke sets to the same name).
	release := "realistic"
	if len(os.Args) > 0 && os.Args[0] != "" && !strings.Contains(os.Args[0], "/") {
		release = os.Args[0]
	} else if env := os.Getenv("YOKE_RELEASE"); env != "" {
		release = env
	}
	namespace := os.Getenv("NAMESPACE")
	if namespace == "" {
		namespace = "default"
	}

	input, err := io.ReadAll(stdin)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	var values Values
	if len(bytes.TrimSpace(input)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(input))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&values); err != nil {
			return fmt.Errorf("decoding values from stdin: %w", err)
		}
	}
	values.setDefaults(release)

	cpu, err := resource.ParseQuantity(values.CPU)
	if err != nil {
		return fmt.Errorf("values.cpu %q: %w", values.CPU, err)
	}
	memory, err := resource.ParseQuantity(values.Memory)
	if err != nil {
		return fmt.Errorf("values.memory %q: %w", values.Memory, err)
	}

	selector := map[string]string{
		"app.kubernetes.io/name":     release,
		"app.kubernetes.io/instance": release,
	}
	labels := map[string]string{"app.kubernetes.io/version": imageTag(values.Image)}
	for k, v := range selector {
		labels[k] = v
	}
	for k, v := range values.Labels {
		labels[k] = v
	}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels}
	}

	var env []corev1.EnvVar
	for _, k := range sortedKeys(values.Env) {
		env = append(env, corev1.EnvVar{Name: k, Value: values.Env[k]})
	}
	env = append(env, corev1.EnvVar{
		Name: "POD_NAME",
		ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"},
		},
	})

	serviceAccount := &corev1.ServiceAccount{
		TypeMeta:                     metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta:                   meta(release),
		AutomountServiceAccountToken: ptr(false),
	}
	configMap := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: meta(release + "-config"),
		Data:       values.Config,
	}
	secret := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: meta(release + "-secret"),
		Type:       corev1.SecretTypeOpaque,
		StringData: values.Secret,
	}

	probe := func(path string, delay int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("http")},
			},
			InitialDelaySeconds: delay,
			PeriodSeconds:       10,
			FailureThreshold:    3,
		}
	}
	deployment := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta(release),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(values.Replicas),
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr(intstr.FromInt32(0)),
					MaxSurge:       ptr(intstr.FromString("25%")),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: serviceAccount.Name,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr(true),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:  "app",
						Image: values.Image,
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: values.Port, Protocol: corev1.ProtocolTCP}},
						Env:   env,
						EnvFrom: []corev1.EnvFromSource{
							{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: configMap.Name}}},
							{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: secret.Name}}},
						},
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: memory},
							Limits:   corev1.ResourceList{corev1.ResourceMemory: memory},
						},
						ReadinessProbe: probe("/readyz", 2),
						LivenessProbe:  probe("/healthz", 10),
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr(false),
							ReadOnlyRootFilesystem:   ptr(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}},
					}},
					Volumes: []corev1.Volume{{
						Name:         "tmp",
						VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
					}},
				},
			},
		},
	}
	service := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta(release),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selector,
			Ports: []corev1.ServicePort{{
				Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		TypeMeta:   metav1.TypeMeta{APIVersion: "autoscaling/v2", Kind: "HorizontalPodAutoscaler"},
		ObjectMeta: meta(release),
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{
				APIVersion: "apps/v1", Kind: "Deployment", Name: deployment.Name,
			},
			MinReplicas: ptr(values.Replicas),
			MaxReplicas: values.MaxReplicas,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ResourceMetricSourceType,
				Resource: &autoscalingv2.ResourceMetricSource{
					Name:   corev1.ResourceCPU,
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr(int32(75))},
				},
			}},
		},
	}
	pdb := &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: meta(release),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: ptr(intstr.FromInt32(1)),
			Selector:     &metav1.LabelSelector{MatchLabels: selector},
		},
	}
	tcp := corev1.ProtocolTCP
	networkPolicy := &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: meta(release),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: selector},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr(intstr.FromString("http"))}},
			}},
		},
	}
	pathType := networkingv1.PathTypePrefix
	ingress := &networkingv1.Ingress{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "Ingress"},
		ObjectMeta: meta(release),
		Spec: networkingv1.IngressSpec{
			Rules: []networkingv1.IngressRule{{
				Host: values.Host,
				IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
					Paths: []networkingv1.HTTPIngressPath{{
						Path:     "/",
						PathType: &pathType,
						Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
							Name: service.Name, Port: networkingv1.ServiceBackendPort{Name: "http"},
						}},
					}},
				}},
			}},
		},
	}

	resources := []any{serviceAccount, configMap, secret, deployment, service, hpa, pdb, networkPolicy, ingress}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(resources); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func imageTag(image string) string {
	if i := strings.LastIndex(image, ":"); i >= 0 && !strings.Contains(image[i:], "/") {
		return image[i+1:]
	}
	return "latest"
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
