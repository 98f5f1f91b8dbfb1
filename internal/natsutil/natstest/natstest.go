// Package natstest makes the credentials that tests of NATS authentication
// need: a throw-away CA with server and client certificates for loopback,
// nkey users, and operator-mode creds files. Everything is written under a
// test's temporary directory.
package natstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// WriteFile writes data to name under dir (0600) and returns the path.
func WriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TLSFiles are PEM files of a CA and certificates it signed.
type TLSFiles struct {
	CA                    string // the CA certificate
	ServerCert, ServerKey string // for 127.0.0.1, ::1 and localhost
	ClientCert, ClientKey string // a client certificate (CN rtc-client)
}

// TLS creates a CA, a server certificate for loopback and a client
// certificate, valid for an hour, under dir.
func TLS(t testing.TB, dir string) TLSFiles {
	t.Helper()
	now := time.Now()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rtc-test-ca"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, server bool) (certPEM, keyPEM []byte) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		if server {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	}
	sc, sk := leaf(2, "rtc-test-server", x509.ExtKeyUsageServerAuth, true)
	cc, ck := leaf(3, "rtc-client", x509.ExtKeyUsageClientAuth, false)
	return TLSFiles{
		CA:         WriteFile(t, dir, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		ServerCert: WriteFile(t, dir, "server-cert.pem", sc), ServerKey: WriteFile(t, dir, "server-key.pem", sk),
		ClientCert: WriteFile(t, dir, "client-cert.pem", cc), ClientKey: WriteFile(t, dir, "client-key.pem", ck),
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// NKeyUser creates a user nkey, writes its seed to name under dir, and
// returns the public key (for the server config) and the seed file's path.
func NKeyUser(t testing.TB, dir, name string) (public, seedFile string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub, WriteFile(t, dir, name, append(seed, '\n'))
}

// Operator is an operator-mode (decentralized JWT) setup with one account
// and one user: ConfText is a nats-server config fragment (operator, memory
// resolver preloaded with the account), CredsFile the user's creds file.
type Operator struct {
	ConfText  string
	CredsFile string
}

// OperatorCreds creates an operator, an account with JetStream, and a user
// of it, under dir.
func OperatorCreds(t testing.TB, dir string) Operator {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	okp, err := nkeys.CreateOperator()
	must(err)
	opub, err := okp.PublicKey()
	must(err)
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "rtc-test-operator"
	ojwt, err := oc.Encode(okp)
	must(err)

	akp, err := nkeys.CreateAccount()
	must(err)
	apub, err := akp.PublicKey()
	must(err)
	ac := jwt.NewAccountClaims(apub)
	ac.Name = "RTC"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt, err := ac.Encode(okp)
	must(err)

	// JetStream in operator mode needs a system account.
	skp, err := nkeys.CreateAccount()
	must(err)
	spub, err := skp.PublicKey()
	must(err)
	sc := jwt.NewAccountClaims(spub)
	sc.Name = "SYS"
	sjwt, err := sc.Encode(okp)
	must(err)

	ukp, err := nkeys.CreateUser()
	must(err)
	upub, err := ukp.PublicKey()
	must(err)
	uc := jwt.NewUserClaims(upub)
	uc.Name = "rtc-test-user"
	uc.IssuerAccount = apub
	ujwt, err := uc.Encode(akp)
	must(err)
	seed, err := ukp.Seed()
	must(err)
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	must(err)

	return Operator{
		ConfText: "operator: " + ojwt + "\nsystem_account: " + spub + "\nresolver: MEMORY\nresolver_preload: {\n  " +
			apub + ": " + ajwt + "\n  " + spub + ": " + sjwt + "\n}\n",
		CredsFile: WriteFile(t, dir, "user.creds", creds),
	}
}
