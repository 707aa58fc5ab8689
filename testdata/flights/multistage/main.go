// Command multistage is a test flight that emits three stages as a JSON array
// of arrays, in the shapes a real application would use:
//
//	stage 1: Namespace $NAMESPACE, CustomResourceDefinition widgets.hoist.test
//	stage 2: ConfigMaps <name>-settings and <name>-features
//	stage 3: Deployments <name>-api and <name>-worker
//
// <name> is argv[0] (the release name). With --no-namespace, namespaced objects
// carry no metadata.namespace (the deployer must fill in the release namespace).
package main

import (
	"encoding/json"
	"fmt"
	"os"
)

type object = map[string]any

func main() {
	name := "multistage"
	if len(os.Args) > 0 && os.Args[0] != "" {
		name = os.Args[0]
	}
	namespace := os.Getenv("NAMESPACE")
	if namespace == "" {
		namespace = "default"
	}
	setNamespace := true
	for _, arg := range os.Args[1:] {
		if arg == "--no-namespace" {
			setNamespace = false
		}
	}

	labels := func(component string) object {
		return object{
			"app.kubernetes.io/name":      name,
			"app.kubernetes.io/component": component,
		}
	}
	meta := func(objName, component string) object {
		m := object{"name": objName, "labels": labels(component)}
		if setNamespace {
			m["namespace"] = namespace
		}
		return m
	}

	namespaceObj := object{
		"apiVersion": "v1",
		"kind":       "Namespace",
		"metadata":   object{"name": namespace, "labels": object{"app.kubernetes.io/part-of": name}},
	}
	crd := object{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   object{"name": "widgets.hoist.test"},
		"spec": object{
			"group": "hoist.test",
			"scope": "Namespaced",
			"names": object{
				"plural":     "widgets",
				"singular":   "widget",
				"kind":       "Widget",
				"listKind":   "WidgetList",
				"shortNames": []string{"wd"},
			},
			"versions": []object{{
				"name":    "v1",
				"served":  true,
				"storage": true,
				"schema": object{"openAPIV3Schema": object{
					"type": "object",
					"properties": object{
						"spec": object{
							"type": "object",
							"properties": object{
								"size":  object{"type": "integer", "minimum": 1},
								"color": object{"type": "string"},
							},
						},
					},
				}},
			}},
		},
	}

	settings := object{
		"apiVersion": "v1",
		"kind":       "ConfigMap",
		"metadata":   meta(name+"-settings", "config"),
		"data": object{
			"LOG_LEVEL":   "info",
			"LISTEN_ADDR": ":8080",
			"config.yaml": "server:\n  port: 8080\n  timeout: 30s\n",
		},
	}
	features := object{
		"apiVersion": "v1",
		"kind":       "ConfigMap",
		"metadata":   meta(name+"-features", "config"),
		"data":       object{"widgets": "true", "beta": "false"},
	}

	deployment := func(component string, replicas int, args []string) object {
		return object{
			"apiVersion": "apps/v1",
			"kind":       "Deployment",
			"metadata":   meta(name+"-"+component, component),
			"spec": object{
				"replicas": replicas,
				"selector": object{"matchLabels": labels(component)},
				"template": object{
					"metadata": object{"labels": labels(component)},
					"spec": object{
						"containers": []object{{
							"name":  component,
							"image": "registry.k8s.io/pause:3.10",
							"args":  args,
							"envFrom": []object{
								{"configMapRef": object{"name": name + "-settings"}},
							},
							"resources": object{
								"requests": object{"cpu": "10m", "memory": "16Mi"},
								"limits":   object{"memory": "64Mi"},
							},
						}},
					},
				},
			},
		}
	}

	stages := [][]object{
		{namespaceObj, crd},
		{settings, features},
		{deployment("api", 2, []string{"--mode=api"}), deployment("worker", 1, []string{"--mode=worker"})},
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(stages); err != nil {
		fmt.Fprintln(os.Stderr, "multistage: writing output:", err)
		os.Exit(1)
	}
}
