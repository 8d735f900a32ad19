// The API explorer at /docs: Swagger UI over this server's own description. A file of
// its own, not an inline script, so the page's Content-Security-Policy forbids those.
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
