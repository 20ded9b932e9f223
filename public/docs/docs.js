// Lists every operation of /api/openapi.json: method, path, summary, parameters and responses.
"use strict";

function el(tag, attrs, ...children) {
	const node = document.createElement(tag);
	Object.assign(node, attrs || {});
	node.append(...children.filter((c) => c !== null && c !== undefined));
	return node;
}

fetch("/api/openapi.json")
	.then((r) => r.json())
	.then((doc) => {
		document
			.getElementById("intro")
			.prepend(`${doc.info.title} ${doc.info.version}: ${doc.info.description} `);
		const list = document.getElementById("operations");
		for (const [path, operations] of Object.entries(doc.paths)) {
			for (const [method, op] of Object.entries(operations)) {
				const secured =
					(op.security || []).some((s) => Object.keys(s).length > 0) &&
					!(op.security || []).some((s) => Object.keys(s).length === 0);
				const responses = el(
					"dl",
					null,
					...Object.entries(op.responses).flatMap(([code, r]) => [
						el("dt", { textContent: code }),
						el("dd", { textContent: r.description }),
					]),
				);
				const params = (op.parameters || []).map((p) =>
					el("div", {
						className: "muted",
						textContent: `${p.in} ${p.name}${p.required ? " (required)" : ""}: ${p.description || ""}`,
					}),
				);
				list.append(
					el(
						"section",
						{ className: "card op", id: op.operationId },
						el(
							"div",
							null,
							el("span", {
								className: `method ${method}`,
								textContent: method.toUpperCase(),
							}),
							el("code", { textContent: path }),
							secured
								? el("span", { className: "badge", textContent: "bearer token" })
								: null,
						),
						el("p", { textContent: op.summary }),
						op.description
							? el("p", { className: "muted", textContent: op.description })
							: null,
						...params,
						responses,
					),
				);
			}
		}
	})
	.catch((err) => {
		document.getElementById("operations").textContent =
			`Could not load /api/openapi.json: ${err.message}`;
	});
