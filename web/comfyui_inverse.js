// The pack's frontend extension (ComfyUI's stock frontend, 1.x):
//  - shows a node's text output (the V3 `ui.PreviewText` of the pack's metric and operator nodes) on
//    the node itself, in a read-only text box that stays until the next run of that node (the stock
//    frontend renders ui "text" only for its own PreviewAny node);
//  - lists the pack's workflow templates in file-name order (the server lists them in directory
//    order, and the template browser's default sort keeps that order);
//  - says so when a run of a graph with the pack's nodes skipped nodes that failed validation, e.g.
//    a model file that is not installed (the stock frontend then only outlines the node in red).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const WIDGET = "inverse_text";
const MODULE = new URL(import.meta.url).pathname.split("/")[2]; // /extensions/<pack folder>/comfyui_inverse.js

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

const getWorkflowTemplates = api.getWorkflowTemplates.bind(api);
api.getWorkflowTemplates = async function () {
    const templates = await getWorkflowTemplates();
    const ours = templates?.[decodeURIComponent(MODULE)];
    if (Array.isArray(ours)) ours.sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    return templates;
};

const queuePrompt = api.queuePrompt.bind(api);
api.queuePrompt = async function (number, data, ...rest) {
    const result = await queuePrompt(number, data, ...rest);
    const output = data?.output ?? {};
    const ours = Object.values(output).some((node) => String(node?.class_type).startsWith("Inverse"));
    const failed = Object.entries(result?.node_errors ?? {});
    if (ours && failed.length) {
        const lines = failed.map(([id, error]) => {
            const title = output[id]?._meta?.title || error.class_type || id;
            const first = error.errors?.[0] ?? {};
            const detail = String(first.details || first.message || "").slice(0, 160);
            return `${title}: ${first.message || "invalid"}${detail && detail !== first.message ? ` (${detail})` : ""}`;
        });
        app.extensionManager?.toast?.add({
            severity: "error",
            summary: "Not run: these nodes failed validation, so the nodes after them were skipped",
            detail: lines.join("\n") + "\nFix them (a missing model: see the workflow's Read me) and run again.",
        });
    }
    return result;
};

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
