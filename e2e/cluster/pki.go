package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// pki is the cluster's key material, as PEM files in a directory: a CA, the API server's
// serving certificate, an admin client certificate (group system:masters) and the
// ServiceAccount token signing key. EC P-256 throughout: Go makes it in milliseconds.
type pki struct {
	dir                     string
	caCert, caKey           []byte
	serveCert, serveKey     []byte
	adminCert, adminKey     []byte
	saKey, saPub            []byte
	caFile, serveCertFile   string
	serveKeyFile, saKeyFile string
	saPubFile               string
}

// newPKI makes the key material in dir; the serving certificate names bind besides the
// loopback addresses.
func newPKI(dir string, bind netip.Addr) (*pki, error) {
	p := &pki{dir: dir}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ca := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "podwall-testenv-ca"},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := sign(ca, ca, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p.caCert, p.caKey = pemCert(caDER), pemKey(caKey)

	// The serving certificate names every way a client reaches the API server: 127.0.0.1
	// (also through a relay), its bind address (lab nodes on the underlay) and the
	// in-cluster Service names.
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.96.0.1")}
	if !bind.IsLoopback() {
		ips = append(ips, bind.AsSlice())
	}
	p.serveCert, p.serveKey, err = leaf(caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		IPAddresses: ips,
	})
	if err != nil {
		return nil, err
	}
	p.adminCert, p.adminKey, err = leaf(caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, err
	}
	// The API server verifies tokens with the public half: given the private key as
	// --service-account-key-file, it fails to start.
	p.saKey, p.saPub = pemKey(saKey), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})

	files := []struct {
		name string
		data []byte
		to   *string
	}{
		{"ca.crt", p.caCert, &p.caFile},
		{"apiserver.crt", p.serveCert, &p.serveCertFile},
		{"apiserver.key", p.serveKey, &p.serveKeyFile},
		{"sa.key", p.saKey, &p.saKeyFile},
		{"sa.pub", p.saPub, &p.saPubFile},
	}
	for _, f := range files {
		*f.to = filepath.Join(dir, f.name)
		if err := os.WriteFile(*f.to, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func leaf(ca *x509.Certificate, caKey crypto.Signer, tmpl *x509.Certificate) (cert, key []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := sign(tmpl, ca, k.Public(), caKey)
	if err != nil {
		return nil, nil, err
	}
	return pemCert(der), pemKey(k), nil
}

func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(7 * 24 * time.Hour)
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err) // a P-256 key always marshals
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
