// Creates a blob container on Azurite with a SharedKey-signed request, as object_store does not
// create containers. Uses Azurite's well-known development account and only Node's own modules,
// so it runs wherever Azurite does.
//
//   node create-container.js http://127.0.0.1:10000 ldk-test
//
// Exit 0 when the container was created (201) or exists already (409 ContainerAlreadyExists);
// otherwise prints the server's answer and exits 1.
"use strict";

const crypto = require("crypto");
const http = require("http");

// Azurite's documented development account; not a secret.
const ACCOUNT = "devstoreaccount1";
const KEY =
	"Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const VERSION = "2021-08-06";

const [endpoint, container] = process.argv.slice(2);
if (!endpoint || !container) {
	console.error("usage: node create-container.js <blob endpoint URL> <container>");
	process.exit(2);
}

const url = new URL(`${endpoint.replace(/\/$/, "")}/${ACCOUNT}/${container}?restype=container`);
const date = new Date().toUTCString();
// https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key: the verb,
// eleven standard headers (all empty here; Content-Length is empty when 0), the x-ms- headers,
// then the resource: /account + the URI path (which in path style starts with the account again)
// and the query parameters.
const stringToSign = [
	"PUT",
	...Array(11).fill(""),
	`x-ms-date:${date}`,
	`x-ms-version:${VERSION}`,
	`/${ACCOUNT}${url.pathname}\nrestype:container`,
].join("\n");
const signature = crypto
	.createHmac("sha256", Buffer.from(KEY, "base64"))
	.update(stringToSign, "utf8")
	.digest("base64");

const req = http.request(
	url,
	{
		method: "PUT",
		timeout: 5000,
		headers: {
			"x-ms-date": date,
			"x-ms-version": VERSION,
			"Content-Length": "0",
			Authorization: `SharedKey ${ACCOUNT}:${signature}`,
		},
	},
	(res) => {
		let body = "";
		res.setEncoding("utf8");
		res.on("data", (chunk) => (body += chunk));
		res.on("end", () => {
			const code = res.headers["x-ms-error-code"] || "";
			if (res.statusCode === 201 || (res.statusCode === 409 && code === "ContainerAlreadyExists")) {
				process.exit(0);
			}
			console.error(`HTTP ${res.statusCode} ${code}: ${body.slice(0, 500)}`);
			process.exit(1);
		});
	},
);
req.on("timeout", () => req.destroy(new Error("timed out after 5 s")));
req.on("error", (err) => {
	console.error(`request failed: ${err.message}`);
	process.exit(1);
});
req.end();
