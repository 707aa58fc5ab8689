// Command yamlstream is a test flight that writes a multi-document YAML stream
// with `---` separators, comments, an empty document and a document holding
// only a comment. It contains exactly three objects, in this order:
//
//	ConfigMap <name>-config, Secret <name>-secret, ServiceAccount <name>
//
// <name> is argv[0] (the release name); namespaced objects are in $NAMESPACE.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

const stream = `# yamlstream test flight: a leading comment before the first separator
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: NAME-config   # trailing comment
  namespace: NAMESPACE
  labels:
    app.kubernetes.io/name: NAME
data:
  # a comment inside a mapping
  greeting: hello
  multiline: |
    line one
    line two
  quoted: "a: b # not a comment"
---
# this document holds only a comment and must be skipped
---
---
apiVersion: v1
kind: Secret
metadata:
  name: NAME-secret
  namespace: NAMESPACE
type: Opaque
stringData:
  password: hunter2
--- # a comment on the separator line
apiVersion: v1
kind: ServiceAccount
metadata:
  name: NAME
  namespace: NAMESPACE
automountServiceAccountToken: false
...
`

func main() {
	name := "yamlstream"
	if len(os.Args) > 0 && os.Args[0] != "" {
		name = os.Args[0]
	}
	namespace := os.Getenv("NAMESPACE")
	if namespace == "" {
		namespace = "default"
	}
	// NAMESPACE is listed first so that it wins over its prefix NAME.
	out := strings.NewReplacer("NAMESPACE", strconv.Quote(namespace), "NAME", name).Replace(stream)
	if _, err := os.Stdout.WriteString(out); err != nil {
		fmt.Fprintln(os.Stderr, "yamlstream: writing output:", err)
		os.Exit(1)
	}
}
