package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// etcdYAML is validYAML on backend etcd: the smallest valid etcd block.
const etcdYAML = validYAML + `
storage:
  backend: etcd
  etcd:
    endpoints: [http://127.0.0.1:2379]
`

// TestStorageConfigRules loads the storage block from YAML and the environment, as an operator
// writes it, and checks the problem keys Validate reports.
func TestStorageConfigRules(t *testing.T) {
	t.Parallel()
	passwordFile := mustWriteFile(t, "etcd-password", "file-password\n")
	for _, tc := range []struct {
		name    string
		storage string // the storage block, indented under "storage:"
		env     map[string]string
		want    []string
	}{
		{"bolt by default", "", nil, nil},
		{"bolt explicitly", "backend: bolt", nil, nil},
		{"unknown backend", "backend: postgres", nil, []string{"storage.backend"}},
		{"etcd minimal", "backend: etcd\netcd: {endpoints: [http://127.0.0.1:2379]}", nil, nil},
		{"etcd from the environment", "", map[string]string{
			"WECOM_OIDC_STORAGE__BACKEND":            "etcd",
			"WECOM_OIDC_STORAGE__ETCD__ENDPOINTS":    "https://etcd-1:2379, https://etcd-2:2379",
			"WECOM_OIDC_STORAGE__ETCD__USERNAME":     "wecom-oidc",
			"WECOM_OIDC_STORAGE__ETCD__PASSWORD":     "env-password",
			"WECOM_OIDC_STORAGE__ETCD__TLS__CA_FILE": "/etc/ca.pem",
		}, nil},
		{"etcd without endpoints", "backend: etcd", nil, []string{"storage.etcd.endpoints"}},
		{"etcd endpoint without scheme", "backend: etcd\netcd: {endpoints: [\"etcd-1:2379\"]}", nil, []string{"storage.etcd.endpoints[0]"}},
		{"etcd endpoint with a path", "backend: etcd\netcd: {endpoints: [http://a:2379, http://b:2379/v3]}", nil, []string{"storage.etcd.endpoints[1]"}},
		{"etcd endpoint unix socket", "backend: etcd\netcd: {endpoints: [\"unix:///run/etcd.sock\"]}", nil, []string{"storage.etcd.endpoints[0]"}},
		{"etcd tls with http endpoints", "backend: etcd\netcd: {endpoints: [https://a:2379, http://b:2379], tls: {ca_file: /ca.pem}}", nil, []string{"storage.etcd.tls"}},
		{"etcd tls complete", "backend: etcd\netcd: {endpoints: [https://a:2379], tls: {ca_file: /ca.pem, cert_file: /c.pem, key_file: /k.pem, server_name: etcd}}", nil, nil},
		{"etcd cert without key", "backend: etcd\netcd: {endpoints: [https://a:2379], tls: {cert_file: /c.pem}}", nil, []string{"storage.etcd.tls"}},
		{"etcd prefix", "backend: etcd\netcd: {endpoints: [http://a:2379], prefix: /sso/prod/}", nil, nil},
		{"etcd prefix not absolute", "backend: etcd\netcd: {endpoints: [http://a:2379], prefix: sso}", nil, []string{"storage.etcd.prefix"}},
		{"etcd prefix root", "backend: etcd\netcd: {endpoints: [http://a:2379], prefix: /}", nil, []string{"storage.etcd.prefix"}},
		{"etcd timeouts", "backend: etcd\netcd: {endpoints: [http://a:2379], dial_timeout: 2s, request_timeout: 1s}", nil, nil},
		{"etcd negative timeout", "backend: etcd\netcd: {endpoints: [http://a:2379], request_timeout: -1s}", nil, []string{"storage.etcd.request_timeout"}},
		{"etcd username without password", "backend: etcd\netcd: {endpoints: [http://a:2379], username: u}", nil, []string{"storage.etcd.password"}},
		{"etcd password without username", "backend: etcd\netcd: {endpoints: [http://a:2379], password: p}", nil, []string{"storage.etcd.username"}},
		{"etcd password from a file", "backend: etcd\netcd: {endpoints: [http://a:2379], username: u, password_file: " + passwordFile + "}", nil, nil},
		{"etcd password from a variable", "backend: etcd\netcd: {endpoints: [http://a:2379], username: u, password_env: ETCD_PW}", map[string]string{"ETCD_PW": "pw"}, nil},
		{"etcd password variable unset", "backend: etcd\netcd: {endpoints: [http://a:2379], username: u, password_env: ETCD_PW}", nil, []string{"storage.etcd.password_env"}},
		{"etcd password file missing", "backend: etcd\netcd: {endpoints: [http://a:2379], username: u, password_file: /nonexistent/pw}", nil, []string{"storage.etcd.password_file"}},
		{"etcd two password sources", "backend: etcd\netcd: {endpoints: [http://a:2379], username: u, password: p, password_env: ETCD_PW}", map[string]string{"ETCD_PW": "pw"}, []string{"storage.etcd.password"}},
		{"etcd keys with bolt", "etcd: {endpoints: [http://a:2379], tls: {server_name: etcd}, password_env: ETCD_PW}", nil,
			[]string{"storage.etcd.endpoints", "storage.etcd.password_env", "storage.etcd.tls.server_name"}},
		{"etcd key with bolt from the environment", "", map[string]string{"WECOM_OIDC_STORAGE__ETCD__PREFIX": "/x/"}, []string{"storage.etcd.prefix"}},
		{"bolt needs a path", "path: \"\"", nil, []string{"storage.path"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			yaml := validYAML
			if tc.storage != "" {
				yaml += "storage:\n  " + strings.ReplaceAll(tc.storage, "\n", "\n  ") + "\n"
			}
			c := mustLoadYAML(t, yaml, tc.env)
			err := c.Validate(ModeServe)
			if got := problemKeys(t, err); !slices.Equal(got, tc.want) {
				t.Errorf("problem keys = %q, want %q\n%v", got, tc.want, err)
			}
		})
	}
}

func TestStorageConfigUnknownEtcdKey(t *testing.T) {
	t.Parallel()
	path := mustWriteFile(t, "c.yaml", etcdYAML+"    endpoint: http://typo:2379\n")
	if _, err := LoadConfig(path, nil); err == nil || !strings.Contains(err.Error(), "storage.etcd.endpoint") {
		t.Fatalf("LoadConfig with storage.etcd.endpoint (a typo): %v", err)
	}
}

// TestEtcdPasswordRedacted: the etcd password, from any source, shows in no rendering.
func TestEtcdPasswordRedacted(t *testing.T) {
	t.Parallel()
	c := mustLoadYAML(t, etcdYAML+"    username: wecom-oidc\n    password_env: ETCD_PW\n",
		map[string]string{"ETCD_PW": "etcd-password-123"})
	if c.Storage.Etcd.Password != "etcd-password-123" {
		t.Fatalf("password not resolved: %q", c.Storage.Etcd.Password)
	}
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "config", c, "storage", c.Storage, "etcd", c.Storage.Etcd)
	for _, out := range []string{
		fmt.Sprintf("%v %+v %#v %s", c, *c, *c, c), fmt.Sprintf("%v %+v %#v", c.Storage, c.Storage, c.Storage),
		fmt.Sprintf("%v %+v %#v", c.Storage.Etcd, c.Storage.Etcd, c.Storage.Etcd), string(j), b.String(),
	} {
		if strings.Contains(out, "etcd-password-123") {
			t.Errorf("the etcd password leaks:\n%s", out)
		}
		if !strings.Contains(out, redactedText) {
			t.Errorf("no %s in:\n%s", redactedText, out)
		}
	}
	if s := c.String(); !strings.Contains(s, "storage.etcd.password="+redactedText) || !strings.Contains(s, "storage.etcd.username=wecom-oidc") {
		t.Errorf("String() = %s", s)
	}
}

func TestStorageDescribe(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sc   StorageConfig
		want string
	}{
		{StorageConfig{Backend: BackendBolt, Path: "./data/wecom-oidc.db"}, "bolt ./data/wecom-oidc.db"},
		{StorageConfig{Backend: BackendEtcd, Etcd: EtcdConfig{Endpoints: []string{"http://a:2379", "http://b:2379"}}}, "etcd http://a:2379,http://b:2379 prefix /wecom-oidc/"},
		{StorageConfig{Backend: BackendEtcd, Etcd: EtcdConfig{Endpoints: []string{"https://a:2379"}, Prefix: "/sso/"}}, "etcd https://a:2379 prefix /sso/"},
	} {
		if got := tc.sc.describe(); got != tc.want {
			t.Errorf("describe() = %q, want %q", got, tc.want)
		}
	}
}

func TestEtcdTLSConfigFiles(t *testing.T) {
	t.Parallel()
	if c, err := (EtcdTLSConfig{}).config(); c != nil || err != nil {
		t.Fatalf("no TLS keys: %v, %v", c, err)
	}
	c, err := EtcdTLSConfig{ServerName: "etcd.internal"}.config()
	if err != nil || c.ServerName != "etcd.internal" || c.MinVersion < 0x0303 {
		t.Fatalf("server_name only: %+v, %v", c, err)
	}
	notPEM := mustWriteFile(t, "ca.pem", "not a certificate")
	for _, bad := range []EtcdTLSConfig{
		{CAFile: "/nonexistent/ca.pem"},
		{CAFile: notPEM},
		{CertFile: notPEM, KeyFile: notPEM},
	} {
		if _, err := bad.config(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

// TestStorageRestoreBolt: `storage restore` puts a bolt backup where storage.path says, only
// when nothing is there, and refuses what is not a database.
func TestStorageRestoreBolt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := newCLI(t, dir)
	c.addClient("restored-app")
	copyPath := filepath.Join(dir, "copy.db")
	c.must("backup", "--out", copyPath)

	target := filepath.Join(dir, "elsewhere", "wecom-oidc.db")
	env := map[string]string{"WECOM_OIDC_STORAGE__PATH": target}
	restored := cli{t: t, getenv: func(k string) string { return env[k] }}
	if out := restored.must("storage", "restore", "--from", copyPath); !strings.Contains(out, "restored "+target) {
		t.Fatalf("storage restore printed %q", out)
	}
	if out := restored.must("client", "list"); !strings.Contains(out, "restored-app") {
		t.Fatalf("client list on the restored database:\n%s", out)
	}
	if _, err := restored.run("storage", "restore", "--from", copyPath); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("restore over an existing database: %v", err)
	}

	garbage := mustWriteFile(t, "garbage.db", "not a database")
	env["WECOM_OIDC_STORAGE__PATH"] = filepath.Join(dir, "third", "wecom-oidc.db")
	if _, err := restored.run("storage", "restore", "--from", garbage); err == nil || !strings.Contains(err.Error(), "does not open") {
		t.Fatalf("restore of garbage: %v", err)
	}
	if _, err := os.Lstat(env["WECOM_OIDC_STORAGE__PATH"]); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused restore left a database behind: %v", err)
	}
	for _, args := range [][]string{{"storage"}, {"storage", "restore"}, {"storage", "migrate"}} {
		if _, err := restored.run(args...); err == nil || !strings.Contains(err.Error(), "usage: wecom-oidc storage restore") {
			t.Errorf("%s: %v", strings.Join(args, " "), err)
		}
	}
}
