// Shows a node's text output (the V3 `ui.PreviewText` of the pack's metric and operator nodes)
// on the node itself, in a read-only text box that stays until the next run of that node.
// The stock frontend renders ui "text" only for its own PreviewAny node.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const WIDGET = "inverse_text";

function showText(node, lines) {
    const text = (Array.isArray(lines) ? lines : [lines]).join("\n");
    let widget = node.widgets?.find((w) => w.name === WIDGET);
    if (!widget) {
        widget = ComfyWidgets.STRING(node, WIDGET, ["STRING", { multiline: true }], app).widget;
        widget.serialize = false; // not in widgets_values: saved workflows stay as they were
        widget.options = { ...(widget.options || {}), serialize: false }; // not in the API prompt
        if (widget.inputEl) {
            widget.inputEl.readOnly = true;
            widget.inputEl.style.opacity = 0.85;
        }
    }
    widget.value = text;
    const size = node.computeSize();
    node.setSize([Math.max(node.size[0], size[0]), Math.max(node.size[1], size[1])]);
    node.setDirtyCanvas(true, true);
}

app.registerExtension({
    name: "comfyui_inverse.ShowText",
    async beforeRegisterNodeDef(nodeType, nodeData) {
        if (!String(nodeData.category || "").startsWith("inverse")) return;
        const onExecuted = nodeType.prototype.onExecuted;
        nodeType.prototype.onExecuted = function (output) {
            onExecuted?.apply(this, arguments);
            if (output?.text?.length) showText(this, output.text);
        };
    },
});
