package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/bolt"
	"github.com/wecom-oidc/wecom-oidc/storage/etcd"
)

// This file turns the storage block into an open storage.Store: its rules (Validate's share),
// the conversion into the backends' own configurations, and openStore, which serve, dev and
// the CLI (when no server answers on the admin socket) all use.

// openStore opens the configured backend. bolt: a second process gets a clear error at once
// (bbolt's lock timeout). etcd: it fails when the cluster does not answer within the dial and
// request timeouts; there is no lock, any number of processes may open one prefix.
func openStore(ctx context.Context, sc StorageConfig) (storage.Store, error) {
	if sc.Backend == BackendEtcd {
		s, err := openEtcd(ctx, sc.Etcd)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	s, err := bolt.Open(sc.Path, bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// openEtcd opens the etcd backend; the TLS files are read here.
func openEtcd(ctx context.Context, ec EtcdConfig) (*etcd.Store, error) {
	tlsConfig, err := ec.TLS.config()
	if err != nil {
		return nil, fmt.Errorf("storage.etcd.tls: %w", err)
	}
	return etcd.Open(ctx, etcd.Config{
		Endpoints:      ec.Endpoints,
		Prefix:         ec.Prefix,
		Username:       ec.Username,
		Password:       ec.Password,
		TLS:            tlsConfig,
		DialTimeout:    ec.DialTimeout,
		RequestTimeout: ec.RequestTimeout,
	})
}

// describe names the store for logs and banners: "bolt ./data/wecom-oidc.db" or
// "etcd http://10.0.0.1:2379,http://10.0.0.2:2379 prefix /wecom-oidc/".
func (sc StorageConfig) describe() string {
	if sc.Backend != BackendEtcd {
		return "bolt " + sc.Path
	}
	prefix := sc.Etcd.Prefix
	if prefix == "" {
		prefix = etcd.DefaultPrefix
	}
	return "etcd " + strings.Join(sc.Etcd.Endpoints, ",") + " prefix " + prefix
}

// config builds the client TLS configuration; nil when no key is set (https:// endpoints are
// then verified against the system's roots).
func (t EtcdTLSConfig) config() (*tls.Config, error) {
	if !t.set() {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file/key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// validate checks the storage block: the backend, what it needs, and no key of the other's.
func (sc *StorageConfig) validate(ps *problems) {
	if sc.SweepInterval < time.Second {
		ps.add("storage.sweep_interval", "must be at least 1s")
	}
	switch sc.Backend {
	case BackendBolt:
		if sc.Path == "" {
			ps.add("storage.path", "required")
		}
		for _, key := range setKeys(reflect.ValueOf(sc.Etcd), "storage.etcd.") {
			ps.add(key, "only with storage.backend etcd (the backend is bolt)")
		}
	case BackendEtcd:
		sc.Etcd.validate(ps)
	default:
		ps.add("storage.backend", "must be bolt or etcd, got %q", sc.Backend)
	}
}

// setKeys lists the key paths of the non-zero koanf-tagged fields of the struct v.
func setKeys(v reflect.Value, prefix string) []string {
	var keys []string
	for f, fv := range v.Fields() {
		tag := f.Tag.Get("koanf")
		switch {
		case tag == "" || !f.IsExported():
		case fv.Kind() == reflect.Struct:
			keys = append(keys, setKeys(fv, prefix+tag+".")...)
		case !fv.IsZero():
			keys = append(keys, prefix+tag)
		}
	}
	return keys
}

// validate checks the etcd block of backend etcd.
func (e *EtcdConfig) validate(ps *problems) {
	const p = "storage.etcd."
	if len(e.Endpoints) == 0 {
		ps.add(p+"endpoints", "at least one is required with storage.backend etcd (e.g. https://etcd-1.internal:2379)")
	}
	var plain []string
	for i, raw := range e.Endpoints {
		key := fmt.Sprintf("%sendpoints[%d]", p, i)
		u, ok := parseHTTPURL(ps, key, raw)
		if !ok {
			continue
		}
		if u.Scheme == "http" {
			plain = append(plain, key)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			ps.add(key, "must be scheme://host:port only, got %q", raw)
		}
	}
	if e.TLS.set() && len(plain) > 0 {
		ps.add(p+"tls", "applies to https:// endpoints only; %s is http://", strings.Join(plain, ", "))
	}
	if (e.TLS.CertFile == "") != (e.TLS.KeyFile == "") {
		ps.add(p+"tls", "set both cert_file and key_file (the client certificate), or neither")
	}
	if e.Prefix != "" && (!strings.HasPrefix(e.Prefix, "/") || strings.Trim(e.Prefix, "/") == "") {
		ps.add(p+"prefix", "must start with / and name a key range such as /wecom-oidc/, got %q", e.Prefix)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"dial_timeout", e.DialTimeout}, {"request_timeout", e.RequestTimeout}} {
		if d.v < 0 {
			ps.add(p+d.key, "must not be negative (0 means the default, 5s)")
		}
	}
	e.validatePassword(ps)
}

// validatePassword applies the rules of the credentials: a username needs exactly one password
// source, a password needs a username.
func (e *EtcdConfig) validatePassword(ps *problems) {
	const p = "storage.etcd."
	var sources []string
	if e.Password != "" && !e.resolved.filled {
		sources = append(sources, "password")
	}
	if e.PasswordFile != "" {
		sources = append(sources, "password_file")
	}
	if e.PasswordEnv != "" {
		sources = append(sources, "password_env")
	}
	switch {
	case len(sources) > 1:
		ps.add(p+"password", "set only one of %s", joinAnd(sources))
	case e.resolved.problem != "":
		// resolveSecret names the lookups secret_env and secret_file.
		ps.add(p+strings.Replace(e.resolved.key, "secret", "password", 1), "%s", e.resolved.problem)
	case e.Username == "" && len(sources) == 1:
		ps.add(p+"username", "required with a password")
	case e.Username != "" && e.Password == "":
		ps.add(p+"password", "required with username (set password_file, password_env or %s)", envVar("storage.etcd.password"))
	}
}
