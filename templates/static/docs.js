// Starts the API viewer of /docs (Swagger UI) or /redoc (ReDoc); templates/docs/*.html. A file
// of its own: the pages' Content-Security-Policy allows no inline script.
const spec = document.body.dataset.openapi;
if (document.body.dataset.viewer === "swagger") {
  window.ui = SwaggerUIBundle({
    url: spec,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // Swagger UI would otherwise send the spec to a validator on the internet for its badge.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
} else {
  Redoc.init(spec, {}, document.getElementById("redoc"));
}
