// Starts Swagger UI on formpush's own description. Kept out of index.html so the page's
// content security policy needs no inline script.
window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  persistAuthorization: false,
});
