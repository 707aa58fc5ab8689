// Command hello-flight is a small example flight: a WebAssembly (WASI) program
// that turns a few values into Kubernetes resources.
//
// Input (stdin, JSON, every field optional):
//
//	{"name": "hello", "replicas": 2, "image": "nginx:1.27", "port": 80}
//
// Output (stdout): a JSON array with a Deployment and a Service.
//
// Like every Yoke flight it gets the release name as argv[0] and the target
// namespace in $NAMESPACE. It uses only the standard library, so it builds in
// about a second:
//
//	GOOS=wasip1 GOARCH=wasm go build -o hello-flight.wasm .
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// Values is what users may set on stdin.
type Values struct {
	Name     string `json:"name"`
	Replicas *int   `json:"replicas"`
	Image    string `json:"image"`
	Port     int    `json:"port"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hello-flight:", err)
		os.Exit(1)
	}
}

func run() error {
	// 1. Read the values, falling back to defaults.
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	var values Values
	if strings.TrimSpace(string(input)) != "" {
		if err := json.Unmarshal(input, &values); err != nil {
			return fmt.Errorf("stdin must be a JSON object like {\"replicas\": 2}: %w", err)
		}
	}
	if values.Name == "" {
		values.Name = os.Args[0] // the release name
	}
	if values.Replicas == nil {
		two := 2
		values.Replicas = &two
	}
	if values.Image == "" {
		values.Image = "nginx:1.27"
	}
	if values.Port == 0 {
		values.Port = 80
	}

	// 2. Build the resources.
	labels := map[string]string{"app.kubernetes.io/name": values.Name}
	metadata := Metadata{Name: values.Name, Namespace: os.Getenv("NAMESPACE"), Labels: labels}

	deployment := Deployment{
		APIVersion: "apps/v1",
		Kind:       "Deployment",
		Metadata:   metadata,
		Spec: DeploymentSpec{
			Replicas: *values.Replicas,
			Selector: Selector{MatchLabels: labels},
			Template: PodTemplate{
				Metadata: Metadata{Labels: labels},
				Spec: PodSpec{Containers: []Container{{
					Name:  "web",
					Image: values.Image,
					Ports: []ContainerPort{{Name: "http", ContainerPort: values.Port}},
				}}},
			},
		},
	}
	service := Service{
		APIVersion: "v1",
		Kind:       "Service",
		Metadata:   metadata,
		Spec: ServiceSpec{
			Selector: labels,
			Ports:    []ServicePort{{Name: "http", Port: 80, TargetPort: "http"}},
		},
	}

	// 3. Print them: a JSON array is one stage, applied together.
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	return out.Encode([]any{deployment, service})
}

// The few Kubernetes fields this flight uses. Real flights often import
// k8s.io/api instead, at the cost of a larger module.

type Metadata struct {
	Name      string            `json:"name,omitempty"`
	Namespace string            `json:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

type Deployment struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   Metadata       `json:"metadata"`
	Spec       DeploymentSpec `json:"spec"`
}

type DeploymentSpec struct {
	Replicas int         `json:"replicas"`
	Selector Selector    `json:"selector"`
	Template PodTemplate `json:"template"`
}

type Selector struct {
	MatchLabels map[string]string `json:"matchLabels"`
}

type PodTemplate struct {
	Metadata Metadata `json:"metadata"`
	Spec     PodSpec  `json:"spec"`
}

type PodSpec struct {
	Containers []Container `json:"containers"`
}

type Container struct {
	Name  string          `json:"name"`
	Image string          `json:"image"`
	Ports []ContainerPort `json:"ports,omitempty"`
}

type ContainerPort struct {
	Name          string `json:"name"`
	ContainerPort int    `json:"containerPort"`
}

type Service struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Metadata   Metadata    `json:"metadata"`
	Spec       ServiceSpec `json:"spec"`
}

type ServiceSpec struct {
	Selector map[string]string `json:"selector"`
	Ports    []ServicePort     `json:"ports"`
}

type ServicePort struct {
	Name       string `json:"name"`
	Port       int    `json:"port"`
	TargetPort string `json:"targetPort"`
}
