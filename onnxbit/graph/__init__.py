"""The graph layer under the passes: queries over graphs (queries), the
onnx-graphsurgeon internals we rely on (gs_adapter), reading weights from
the caller's model without copying them (borrowed), outer-scope initializers
kept once at export (outer_scope), and the ternary proof a folded weight
carries (ternary)."""
