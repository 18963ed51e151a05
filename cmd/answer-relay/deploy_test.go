package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestDeployExamplesAreValidConfigs checks that the configuration shipped in
// deploy/kubernetes, with the secrets of its Secret set as the Deployment
// sets them, passes "answer-relay config check": the examples must not
// drift from the settings the relay knows.
func TestDeployExamplesAreValidConfigs(t *testing.T) {
	f, err := os.Open("../../deploy/kubernetes/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var configFile string
	secrets := map[string]string{}
	dec := yaml.NewDecoder(f)
	for {
		var doc struct {
			Kind       string            `yaml:"kind"`
			Data       map[string]string `yaml:"data"`
			StringData map[string]string `yaml:"stringData"`
		}
		if err := dec.Decode(&doc); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		switch doc.Kind {
		case "ConfigMap":
			configFile = doc.Data["config.yaml"]
		case "Secret":
			secrets = doc.StringData
		}
	}
	if configFile == "" || len(secrets) == 0 {
		t.Fatal("deploy/kubernetes/config.yaml has no ConfigMap config.yaml or no Secret")
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(configFile), 0o600); err != nil {
		t.Fatal(err)
	}
	// As deploy/kubernetes/helpdesk.yaml maps them.
	t.Setenv("ANSWER_RELAY_UPSTREAM_PASSWORD", secrets["upstream-password"])
	t.Setenv("ANSWER_RELAY_API_TOKENS", secrets["api-tokens"])
	t.Setenv("ANSWER_RELAY_WEBHOOK_SECRET", secrets["webhook-secret"])
	t.Setenv("ANSWER_RELAY_WEBHOOK_URL", "http://127.0.0.1:8080/hooks/answer-relay")
	var out, errb strings.Builder
	if code := runConfig(t.Context(), []string{"check", "-config", path}, &out, &errb); code != 0 {
		t.Errorf("config check of the Kubernetes example = %d: %s%s", code, out.String(), errb.String())
	}
}
