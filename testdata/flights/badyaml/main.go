// Command badyaml is a test flight that prints text that is neither valid YAML
// nor valid JSON (an unclosed flow mapping and an unterminated quoted string).
package main

import "fmt"

func main() {
	fmt.Print(`apiVersion: v1
kind: ConfigMap
metadata: {name: broken
data:
  key: "unterminated
	tab: indented with a tab
`)
}
