package iac

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

func TestPackerQemuBuildLogsInWithAKeyOnly(t *testing.T) {
	blocks := moduleBlocks(t, "packer")
	qemu := findBlock(t, blocks, "source", "qemu", "debian")
	for _, name := range []string{"ssh_password", "cd_files"} {
		// cd_files would put a static user-data on the seed, beside the template.
		if _, ok := qemu.Body.Attributes[name]; ok {
			t.Errorf("the qemu source sets %s", name)
		}
	}
	if !refersTo(attr(t, qemu, "ssh_private_key_file"), "var.build_ssh_key") {
		t.Error("the qemu source does not log in with var.build_ssh_key")
	}
	for _, b := range blocks {
		if b.Type == "variable" && strings.Contains(b.Labels[0], "password") {
			t.Errorf("variable %q: the image build must not know a password", b.Labels[0])
		}
	}

	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDtestkeyonly oauthrelay-packer-build"
	doc := cloudConfig(t, renderTemplate(t, packerUserDataTemplate(t, qemu),
		map[string]cty.Value{"ssh_public_key": cty.StringVal(key + "\n")}))
	if doc["ssh_pwauth"] != false {
		// Unset leaves sshd's default, which accepts passwords on Debian.
		t.Errorf("ssh_pwauth = %v, want false", doc["ssh_pwauth"])
	}
	if keys, _ := doc["ssh_authorized_keys"].([]any); !slices.Equal(keys, []any{key}) {
		t.Errorf("ssh_authorized_keys = %v, want the build key only", doc["ssh_authorized_keys"])
	}
	for _, k := range yamlKeys(doc) {
		switch k {
		case "password", "passwd", "plain_text_passwd", "hashed_passwd", "chpasswd":
			t.Errorf("the user data sets %s", k)
		case "lock_passwd":
			t.Errorf("the user data sets lock_passwd (cloud-init locks the default user unless told otherwise)")
		}
	}
}

// packerUserDataTemplate returns the template the qemu source renders as
// the seed's user-data, checking that it hands it the build key.
func packerUserDataTemplate(t *testing.T, qemu *hclsyntax.Block) string {
	t.Helper()
	content, ok := attr(t, qemu, "cd_content").(*hclsyntax.ObjectConsExpr)
	if !ok {
		t.Fatal("cd_content is not an object")
	}
	for _, item := range content.Items {
		if constant(t, item.KeyExpr).AsString() != "user-data" {
			continue
		}
		call, ok := item.ValueExpr.(*hclsyntax.FunctionCallExpr)
		if !ok || call.Name != "templatefile" || len(call.Args) != 2 {
			t.Fatalf("%s: user-data is not templatefile(path, vars)", item.ValueExpr.Range())
		}
		if !refersTo(call.Args[1], "var.build_ssh_key") {
			t.Errorf("%s: the template is not given the build key", call.Args[1].Range())
		}
		return filepath.Join(root, "packer", constant(t, call.Args[0]).AsString())
	}
	t.Fatal("cd_content has no user-data")
	return ""
}

func TestPackerBuildEndsBySealingTheImage(t *testing.T) {
	build := findBlock(t, moduleBlocks(t, "packer"), "build")
	provisioners := nestedBlocks(build, "provisioner")
	last := provisioners[len(provisioners)-1]
	if last.Labels[0] != "shell" || constant(t, attr(t, last, "script")).AsString() != "scripts/seal.sh" {
		t.Fatalf("the last provisioner (%s) is not scripts/seal.sh", last.Range())
	}
	if !refersTo(attr(t, last, "environment_vars"), "build.User") {
		t.Error("seal.sh is not told the build user (BUILD_USER=${build.User})")
	}

	commands := scriptCommands(t, filepath.Join(root, "packer/scripts/seal.sh"))
	for _, tc := range []struct{ why, command string }{
		{"fresh cloud-init instance, logs and machine ID per instance", "cloud-init clean --logs --machine-id"},
		{"SSH host keys generated per instance", "rm -f /etc/ssh/ssh_host_*"},
		{"no password for the build user", `usermod --password '!' "$build_user"`},
		{"the build's key is not authorized on instances", `rm -f "$build_home/.ssh/authorized_keys" /root/.ssh/authorized_keys`},
	} {
		if !slices.Contains(commands, tc.command) {
			t.Errorf("seal.sh does not run %q (%s)", tc.command, tc.why)
		}
	}
}

// scriptCommands returns a shell script's lines without comments and blanks.
func scriptCommands(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out
}

func TestPackerScriptsSyntax(t *testing.T) {
	scripts := mustGlob(t, filepath.Join(root, "packer/scripts/*.sh"))
	for _, name := range []string{"install.sh", "seal.sh", "build-qemu.sh"} {
		if !slices.Contains(scripts, filepath.Join(root, "packer/scripts", name)) {
			t.Errorf("packer/scripts/%s is missing", name)
		}
	}
	for _, script := range scripts {
		t.Run(filepath.Base(script), func(t *testing.T) {
			out, err := exec.Command("sh", "-n", script).CombinedOutput()
			if err != nil {
				t.Errorf("%v\n%s", err, out)
			}
			if info, err := os.Stat(script); err != nil || info.Mode()&0o111 == 0 {
				t.Errorf("not executable: %v", err)
			}
		})
	}
}

// TestPackerImageCarriesTheRDSCABundle: the image installs AWS's RDS CA
// bundle where modules/relay's DSN expects it (sslrootcert), fetched from
// AWS over HTTPS at build time.
func TestPackerImageCarriesTheRDSCABundle(t *testing.T) {
	blocks := moduleBlocks(t, "packer")
	var install *hclsyntax.Block
	for _, p := range nestedBlocks(findBlock(t, blocks, "build"), "provisioner") {
		if s, ok := p.Body.Attributes["script"]; ok && constant(t, s.Expr).AsString() == "scripts/install.sh" {
			install = p
		}
	}
	if install == nil {
		t.Fatal("no provisioner runs scripts/install.sh")
	}
	if !refersTo(attr(t, install, "environment_vars"), "var.rds_ca_bundle_url") {
		t.Error("install.sh is not given var.rds_ca_bundle_url")
	}
	const trustStore = "https://truststore.pki.rds.amazonaws.com/"
	if url := varDefaults(t, blocks)["rds_ca_bundle_url"].AsString(); !strings.HasPrefix(url, trustStore) {
		t.Errorf("var.rds_ca_bundle_url defaults to %q, not AWS's trust store %s", url, trustStore)
	}
	caFile := varDefaults(t, moduleBlocks(t, relayModule))["database_ca_file"].AsString()
	commands := scriptCommands(t, filepath.Join(root, "packer/scripts/install.sh"))
	if !slices.ContainsFunc(commands, func(c string) bool {
		return strings.HasPrefix(c, "install ") && strings.HasSuffix(c, " "+caFile)
	}) {
		t.Errorf("install.sh installs nothing at %s (modules/relay's database_ca_file)", caFile)
	}
	if !slices.ContainsFunc(commands, func(c string) bool { return strings.Contains(c, "--proto '=https'") }) {
		t.Error("install.sh may fetch the bundle over something else than HTTPS")
	}
}
