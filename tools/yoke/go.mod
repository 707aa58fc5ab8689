// Pins the real Yoke CLI (github.com/yokecd/yoke/cmd/yoke), built by scripts/tools for
// compatibility tests. go.sum is missing on purpose: the Go module proxy reachable from the
// project's machines refuses this module (403), so it was never resolved. Where it is
// reachable: (cd tools/yoke && go mod tidy), then commit go.mod and go.sum.
module hoist.local/tools/yoke

go 1.25.0

tool github.com/yokecd/yoke/cmd/yoke

require github.com/yokecd/yoke v0.20.27
