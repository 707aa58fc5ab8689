# A Gatekeeper-mode policy for the gate's end-to-end tests (crates/hoist-cli/tests/policy_gate_e2e.rs):
# it refuses to change an object whose live version is labelled frozen=true (so it needs the
# UPDATE request with oldObject the API server would send), and any request without a user.
package policy

violation contains {"msg": msg} if {
	input.review.operation == "UPDATE"
	input.review.oldObject.metadata.labels.frozen == "true"
	msg := sprintf("%s/%s is frozen: it cannot change (operation %s)", [input.review.kind.kind, input.review.name, input.review.operation])
}

violation contains {"msg": msg} if {
	input.review.userInfo.username == ""
	msg := "the request names no user"
}
