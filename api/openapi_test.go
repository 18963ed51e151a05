package api

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestOpenAPIMatchesRoutes parses the OpenAPI document and compares its
// paths and methods with the routes echo has registered, both ways, and
// checks that it is the document the API serves.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                               `yaml:"openapi"`
		Paths   map[string]map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	methods := []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}
	param := regexp.MustCompile(`\{([^}]+)\}`)
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for m, op := range item {
			if !slices.Contains(methods, m) {
				continue
			}
			documented[strings.ToUpper(m)+" "+param.ReplaceAllString(path, ":$1")] = true
			if _, ok := op["responses"]; !ok {
				t.Errorf("%s %s has no responses", m, path)
			}
		}
	}
	e := newEnv(t, engines[0], nil)
	registered := map[string]bool{}
	for _, r := range e.srv.Echo().Routes() {
		registered[r.Method+" "+r.Path] = true
	}
	for k := range registered {
		if !documented[k] {
			t.Errorf("route %s is not in openapi.yaml", k)
		}
	}
	for k := range documented {
		if !registered[k] {
			t.Errorf("openapi.yaml documents %s, which is not a route", k)
		}
	}
	if len(registered) == 0 {
		t.Fatal("no routes")
	}
	r := e.do("GET", "/api/v1/openapi.yaml", "", nil)
	if r.status != 200 || string(r.body) != string(OpenAPI) {
		t.Fatalf("served document differs: %d", r.status)
	}
}
