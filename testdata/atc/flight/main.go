// The test flight of hoist's ATC end-to-end tests (GOOS=wasip1 GOARCH=wasm), written for hoist
// in the manner of Yoke's ATC test flights. One module, three roles:
//
//   - argv[0] == "converter": a CRD conversion webhook between examples.com/v1 (spec.data) and
//     examples.com/v2 (spec.entries); stdin and stdout are ConversionReviews.
//   - argv[1] == "configmap": a Flight: stdin is a JSON object of strings, output is one
//     ConfigMap named after the release (YOKE_RELEASE) holding it.
//   - otherwise: an Airway instance (a Backend custom resource) on stdin; output is a ConfigMap
//     named after the instance with spec.data and spec.replicas, plus optional extras driven by
//     the spec (an invalid Deployment, an object in another namespace, the instance itself
//     carrying a status, a CRD in a first stage with a custom resource of it in a second
//     stage, a looked-up external ConfigMap through Yoke's host function k8s_lookup).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unsafe"
)

type object = map[string]any

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	if len(os.Args) > 0 && os.Args[0] == "converter" {
		return convert(input)
	}
	if len(os.Args) > 1 && os.Args[1] == "configmap" {
		var data map[string]string
		if err := json.Unmarshal(input, &data); err != nil {
			return fmt.Errorf("failed to decode input: %w", err)
		}
		return emit(object{
			"apiVersion": "v1",
			"kind":       "ConfigMap",
			"metadata":   object{"name": os.Getenv("YOKE_RELEASE")},
			"data":       data,
		})
	}
	return backend(input)
}

type backendSpec struct {
	Data           map[string]string `json:"data"`
	Entries        map[string]string `json:"entries"`
	Replicas       int               `json:"replicas"`
	Invalid        bool              `json:"invalid"`
	OtherNamespace string            `json:"otherNamespace"`
	Status         string            `json:"status"`
	Fail           bool              `json:"fail"`
	// CRDStages: stage 1 is a CRD (Widget of group "w-<name>.<instance group>"), stage 2 a
	// Widget of it (version WidgetVersion, default v1) and the ConfigMap.
	CRDStages     bool   `json:"crdStages"`
	WidgetVersion string `json:"widgetVersion"`
	// Lookup: the name of a ConfigMap in the instance's namespace, looked up with
	// host.k8s_lookup; its data.color becomes data.looked ("<absent>" when not found; the
	// color "fail" makes the flight fail).
	Lookup string `json:"lookup"`
}

type backendObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec backendSpec `json:"spec"`
}

func backend(input []byte) error {
	var cr backendObject
	if err := json.Unmarshal(input, &cr); err != nil {
		return fmt.Errorf("failed to decode the instance: %w", err)
	}
	data := map[string]string{}
	for k, v := range cr.Spec.Data {
		data[k] = v
	}
	for k, v := range cr.Spec.Entries {
		data[k] = v
	}
	data["replicas"] = strconv.Itoa(cr.Spec.Replicas)
	data["release"] = os.Getenv("YOKE_RELEASE")
	data["namespace"] = os.Getenv("NAMESPACE")
	if cr.Spec.Lookup != "" {
		looked, err := lookupColor(cr.Spec.Lookup, os.Getenv("NAMESPACE"))
		if err != nil {
			return err
		}
		if looked == "fail" {
			return fmt.Errorf("the looked-up ConfigMap %s asks the flight to fail", cr.Spec.Lookup)
		}
		data["looked"] = looked
	}
	out := []any{object{
		"apiVersion": "v1",
		"kind":       "ConfigMap",
		"metadata":   object{"name": cr.Metadata.Name},
		"data":       data,
	}}
	if cr.Spec.Invalid {
		// A Deployment without selector and template: the API server lists the field errors.
		out = append(out, object{
			"apiVersion": "apps/v1",
			"kind":       "Deployment",
			"metadata":   object{"name": cr.Metadata.Name},
			"spec":       object{"replicas": cr.Spec.Replicas},
		})
	}
	if cr.Spec.OtherNamespace != "" {
		out = append(out, object{
			"apiVersion": "v1",
			"kind":       "ConfigMap",
			"metadata":   object{"name": cr.Metadata.Name, "namespace": cr.Spec.OtherNamespace},
			"data":       data,
		})
	}
	if cr.Spec.Status != "" {
		meta := object{"name": cr.Metadata.Name}
		if cr.Metadata.Namespace != "" {
			meta["namespace"] = cr.Metadata.Namespace
		}
		out = append(out, object{
			"apiVersion": cr.APIVersion,
			"kind":       cr.Kind,
			"metadata":   meta,
			"status": object{
				"phase": cr.Spec.Status,
				"conditions": []any{object{
					"type": "Custom", "status": "True", "reason": "FromFlight",
					"message": "set by the flight", "lastTransitionTime": "2026-01-01T00:00:00Z",
				}},
			},
		})
	}
	if cr.Spec.CRDStages {
		group := "w-" + cr.Metadata.Name + "." + strings.SplitN(cr.APIVersion, "/", 2)[0]
		version := cr.Spec.WidgetVersion
		if version == "" {
			version = "v1"
		}
		crd := object{
			"apiVersion": "apiextensions.k8s.io/v1",
			"kind":       "CustomResourceDefinition",
			"metadata":   object{"name": "widgets." + group},
			"spec": object{
				"group": group,
				"scope": "Namespaced",
				"names": object{"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
				"versions": []any{object{
					"name": "v1", "served": true, "storage": true,
					"schema": object{"openAPIV3Schema": object{
						"type": "object",
						"properties": object{"spec": object{
							"type":       "object",
							"properties": object{"size": object{"type": "integer"}},
						}},
					}},
				}},
			},
		}
		widget := object{
			"apiVersion": group + "/" + version,
			"kind":       "Widget",
			"metadata":   object{"name": cr.Metadata.Name},
			"spec":       object{"size": cr.Spec.Replicas},
		}
		if err := emit([]any{[]any{crd}, append(out, widget)}); err != nil {
			return err
		}
		return nil
	}
	if err := emit(out); err != nil {
		return err
	}
	if cr.Spec.Fail {
		return fmt.Errorf("asked to fail")
	}
	return nil
}

func convert(input []byte) error {
	var review struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Request    struct {
			UID               string   `json:"uid"`
			DesiredAPIVersion string   `json:"desiredAPIVersion"`
			Objects           []object `json:"objects"`
		} `json:"request"`
	}
	if err := json.Unmarshal(input, &review); err != nil {
		return fmt.Errorf("failed to decode the ConversionReview: %w", err)
	}
	converted := []any{}
	for _, obj := range review.Request.Objects {
		spec, _ := obj["spec"].(map[string]any)
		if spec == nil {
			spec = map[string]any{}
		}
		// The group differs per test run: only the version decides.
		switch {
		case strings.HasSuffix(review.Request.DesiredAPIVersion, "/v2"):
			if data, ok := spec["data"]; ok {
				spec["entries"] = data
				delete(spec, "data")
			}
		case strings.HasSuffix(review.Request.DesiredAPIVersion, "/v1"):
			if entries, ok := spec["entries"]; ok {
				spec["data"] = entries
				delete(spec, "entries")
			}
		}
		obj["spec"] = spec
		obj["apiVersion"] = review.Request.DesiredAPIVersion
		converted = append(converted, obj)
	}
	return emit(object{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "ConversionReview",
		"response": object{
			"uid":              review.Request.UID,
			"convertedObjects": converted,
			"result":           object{"status": "Success"},
		},
	})
}

//go:wasmimport host k8s_lookup
func hostLookup(statePtr uint32, name, namespace, kind, apiVersion uint64) uint64

// heap keeps the buffers the host writes into reachable, keyed by packed ptr/len.
var heap = map[uint64][]byte{}

//go:wasmexport malloc
func malloc(size uint32) uint64 {
	if size == 0 {
		return 0
	}
	buf := make([]byte, size)
	packed := uint64(uintptr(unsafe.Pointer(&buf[0])))<<32 | uint64(size)
	heap[packed] = buf
	return packed
}

func pack(s string) uint64 {
	if len(s) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(unsafe.StringData(s))))<<32 | uint64(len(s))
}

var lookupState = new(uint32)

// lookupColor looks up ConfigMap name in namespace (Yoke's k8s_lookup ABI: state 0 ok, 3
// not found) and returns its data.color, or "<absent>".
func lookupColor(name, namespace string) (string, error) {
	kind, apiVersion := "ConfigMap", "v1"
	*lookupState = 0
	buffer := hostLookup(uint32(uintptr(unsafe.Pointer(lookupState))), pack(name), pack(namespace), pack(kind), pack(apiVersion))
	runtime.KeepAlive(name)
	runtime.KeepAlive(namespace)
	runtime.KeepAlive(kind)
	runtime.KeepAlive(apiVersion)
	var result []byte
	if buffer != 0 {
		result = heap[buffer]
		delete(heap, buffer)
	}
	switch *lookupState {
	case 0:
		var cm struct {
			Data map[string]string `json:"data"`
		}
		if err := json.Unmarshal(result, &cm); err != nil {
			return "", fmt.Errorf("decoding the looked-up ConfigMap: %w", err)
		}
		return cm.Data["color"], nil
	case 3:
		return "<absent>", nil
	default:
		return "", fmt.Errorf("k8s_lookup of ConfigMap %s/%s failed (state %d): %s", namespace, name, *lookupState, result)
	}
}

func emit(value any) error {
	return json.NewEncoder(os.Stdout).Encode(value)
}
