package ecosystem

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// inClusterClient builds a client the way rest.InClusterConfig does inside a
// pod: a bearer token file and the CA bundle from the kube-root-ca.crt
// ConfigMap (what pods see as ca.crt), no client certificate.
func inClusterClient(t *testing.T, ns, token string) *kubernetes.Clientset {
	t.Helper()
	dir := t.TempDir()
	var ca string
	eventually(t, 30*time.Second, "kube-root-ca.crt ConfigMap", func() error {
		cm, err := admin(t).CoreV1().ConfigMaps(ns).Get(context.Background(), "kube-root-ca.crt", metav1.GetOptions{})
		if err != nil {
			return err
		}
		ca = cm.Data["ca.crt"]
		return nil
	})
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), []byte(ca), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{
		Host:            shared.RESTConfig(t).Host,
		BearerTokenFile: filepath.Join(dir, "token"),
		TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(dir, "ca.crt")},
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// jwtPart decodes one dot-separated part of a JWT.
func jwtPart(t *testing.T, token string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatalf("token part %d: %v", i, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("token part %d: %v", i, err)
	}
	return m
}

func createToken(t *testing.T, ns, sa string, spec authnv1.TokenRequestSpec) string {
	t.Helper()
	tr, err := admin(t).CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, &authnv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, sa, err)
	}
	if tr.Status.Token == "" {
		t.Fatal("TokenRequest returned no token")
	}
	return tr.Status.Token
}

// wantUnauthorized checks that the token is refused with 401.
func wantUnauthorized(t *testing.T, ns, what, token string) {
	t.Helper()
	_, err := inClusterClient(t, ns, token).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if !apierrors.IsUnauthorized(err) {
		t.Fatalf("%s: want 401 Unauthorized, got %v", what, err)
	}
}

// TestServiceAccountInClusterClient simulates a workload: a ServiceAccount
// with RBAC to list pods authenticates with a TokenRequest token.
func TestServiceAccountInClusterClient(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	cs := admin(t)
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reader"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "reader-pods"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pod-reader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "reader", Namespace: ns}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "default ServiceAccount", func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "workload"},
		Spec: corev1.PodSpec{ServiceAccountName: "reader", Containers: []corev1.Container{{Name: "c", Image: "skiff/demo:1"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	token := createToken(t, ns, "reader", authnv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)})
	claims := jwtPart(t, token, 1)
	if claims["sub"] != "system:serviceaccount:"+ns+":reader" {
		t.Fatalf("sub: %v", claims["sub"])
	}
	if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 600 || time.Unix(int64(iat), 0).Sub(time.Now()).Abs() > time.Minute {
		t.Fatalf("exp %v iat %v: want a 600 s token issued now", exp, iat)
	}
	header := jwtPart(t, token, 0)
	if header["alg"] != "RS256" && header["alg"] != "ES256" {
		t.Fatalf("token header: %v", header)
	}

	sa := inClusterClient(t, ns, token)
	pods, err := sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list pods with a ServiceAccount token: %v", err)
	}
	if len(pods.Items) != 1 || pods.Items[0].Name != "workload" {
		t.Fatalf("pods: %v", pods.Items)
	}
	// Watch is allowed too (informers need it).
	w, err := sa.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: pods.ResourceVersion})
	if err != nil {
		t.Fatalf("watch pods: %v", err)
	}
	w.Stop()
	// RBAC: secrets are not granted, nor pods in another namespace.
	_, err = sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `User "system:serviceaccount:`+ns+`:reader" cannot list resource "secrets"`) {
		t.Fatalf("list secrets: want 403 naming the ServiceAccount, got %v", err)
	}
	if _, err = sa.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list pods in another namespace: want 403, got %v", err)
	}
	// The server sees who we are.
	review, err := sa.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ui := review.Status.UserInfo
	if ui.Username != "system:serviceaccount:"+ns+":reader" || !slices.Contains(ui.Groups, "system:serviceaccounts") ||
		!slices.Contains(ui.Groups, "system:serviceaccounts:"+ns) || !slices.Contains(ui.Groups, "system:authenticated") {
		t.Fatalf("SelfSubjectReview: %+v", ui)
	}
	// TokenReview accepts it for the API audience.
	tr, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil || !tr.Status.Authenticated || tr.Status.User.Username != "system:serviceaccount:"+ns+":reader" {
		t.Fatalf("TokenReview: %v %+v", err, tr.Status)
	}

	// A token for another audience passes TokenReview for that audience but
	// is not accepted by the API server.
	vault := createToken(t, ns, "reader", authnv1.TokenRequestSpec{Audiences: []string{"vault"}})
	if aud := jwtPart(t, vault, 1)["aud"]; fmt.Sprint(aud) != "[vault]" {
		t.Fatalf("aud: %v", aud)
	}
	tr, err = cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: vault, Audiences: []string{"vault"}}}, metav1.CreateOptions{})
	if err != nil || !tr.Status.Authenticated || !slices.Equal(tr.Status.Audiences, []string{"vault"}) {
		t.Fatalf("TokenReview for audience vault: %v %+v", err, tr.Status)
	}
	wantUnauthorized(t, ns, "token for another audience", vault)

	// Forged and garbage tokens.
	parts := strings.Split(token, ".")
	sig := []byte(parts[2])
	sig[len(sig)/2] ^= 0x01 // still base64url, different signature
	wantUnauthorized(t, ns, "modified signature", parts[0]+"."+parts[1]+"."+string(sig))
	claims["sub"] = "system:serviceaccount:" + ns + ":default"
	forgedClaims, _ := json.Marshal(claims)
	wantUnauthorized(t, ns, "modified claims", parts[0]+"."+base64.RawURLEncoding.EncodeToString(forgedClaims)+"."+parts[2])
	wantUnauthorized(t, ns, "signed by another key", signWithNewKey(t, header, jwtPart(t, token, 1)))
	none, _ := json.Marshal(map[string]any{"alg": "none", "typ": "JWT"})
	wantUnauthorized(t, ns, "alg none", base64.RawURLEncoding.EncodeToString(none)+"."+parts[1]+".")
	wantUnauthorized(t, ns, "garbage JWT", "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2lnbmF0dXJl")
	wantUnauthorized(t, ns, "not a JWT", "definitely-not-a-token")

	// Bound tokens stop working when their object goes away (a TokenRequest
	// cannot be shorter than 10 minutes, so this is how a token "expires" in
	// a test).
	secret, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "binding"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bound := createToken(t, ns, "reader", authnv1.TokenRequestSpec{BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: secret.Name, UID: secret.UID}})
	if ref, _ := jwtPart(t, bound, 1)["kubernetes.io"].(map[string]any)["secret"].(map[string]any); ref["name"] != "binding" || ref["uid"] != string(secret.UID) {
		t.Fatalf("bound token claims: %v", jwtPart(t, bound, 1))
	}
	if _, err := inClusterClient(t, ns, bound).CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("secret-bound token before deletion: %v", err)
	}
	if err := cs.CoreV1().Secrets(ns).Delete(ctx, secret.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "secret-bound token rejected", func() error {
		_, err := inClusterClient(t, ns, bound).CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if apierrors.IsUnauthorized(err) {
			return nil
		}
		return fmt.Errorf("list: %v", err)
	})
	// A Secret of the same name (new UID) does not revive the token.
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "binding"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wantUnauthorized(t, ns, "token bound to a deleted secret, recreated with a new UID", bound)

	pod, err := cs.CoreV1().Pods(ns).Get(ctx, "workload", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podBound := createToken(t, ns, "reader", authnv1.TokenRequestSpec{BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}})
	if _, err := inClusterClient(t, ns, podBound).CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("pod-bound token before deletion: %v", err)
	}
	if err := cs.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "pod-bound token rejected", func() error {
		_, err := inClusterClient(t, ns, podBound).CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if apierrors.IsUnauthorized(err) {
			return nil
		}
		return fmt.Errorf("list: %v", err)
	})

	// Deleting the ServiceAccount invalidates all its tokens.
	if _, err := sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("unbound token before ServiceAccount deletion: %v", err)
	}
	if err := cs.CoreV1().ServiceAccounts(ns).Delete(ctx, "reader", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "token of a deleted ServiceAccount rejected", func() error {
		_, err := inClusterClient(t, ns, token).CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if apierrors.IsUnauthorized(err) {
			return nil
		}
		return fmt.Errorf("list: %v", err)
	})
}

// signWithNewKey signs the claims with a freshly generated RSA key under
// the original header (same kid): a well-formed token the server never issued.
func signWithNewKey(t *testing.T, header, claims map[string]any) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	header["alg"] = "RS256"
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	signing := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}
