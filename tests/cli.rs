//! The binary as operators use it: `--version`, `check-config`, `serve`
//! start-up errors, and SIGTERM.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// `check-config` with these variables set.
fn check_config(env: &[(&str, &str)]) -> std::process::Output {
    let mut c = bin();
    c.arg("check-config");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imprint-gateway"));
    // Start from a clean slate: none of the runner's variables leak in.
    for (k, _) in std::env::vars() {
        // Nor a proxy: `check-config` checks the proxy variables too.
        let proxy = k.to_ascii_uppercase().ends_with("_PROXY");
        if k.starts_with("IMPRINT_") || k.starts_with("GATEWAY") || proxy {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn version_and_help() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("imprint-gateway "));
    for cmd in ["serve", "check-config"] {
        let out = bin().args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{cmd} --help");
    }
}

#[test]
fn check_config_masks_secrets() {
    let out = check_config(&[
        ("IMPRINT_API_KEY", "sk_live_do_not_print"),
        ("IMPRINT_MERCHANT_KEY", "mk_do_not_print"),
        ("GATEWAY_GRPC_ADDR", "127.0.0.1:7001"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("grpc_addr = \"127.0.0.1:7001\""),
        "{stdout}"
    );
    assert!(stdout.contains("api_key = \"[redacted sha256:"), "{stdout}");
    assert!(!stdout.contains("do_not_print") && !stderr.contains("do_not_print"));
}

#[test]
fn check_config_names_the_bad_setting() {
    let out = check_config(&[("GATEWAY_HTTP_ADDR", "localhost")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GATEWAY_HTTP_ADDR"), "{stderr}");

    let dir = std::env::temp_dir().join(format!("igw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[upstream]\ndefault_deadline = \"soon\"\n").unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("default_deadline"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn secrets_given_through_gateway_variables_never_show() {
    // A digit-only secret is a string setting, not a number.
    let out = check_config(&[
        ("GATEWAY__UPSTREAM__API_KEY", "4242424242"),
        ("GATEWAY__UPSTREAM__MERCHANT_KEY", "0000777700"),
    ]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(
        !all.contains("4242424242") && !all.contains("0000777700"),
        "{all}"
    );
    // An invalid value: refused, the setting named, the value never shown.
    for (var, value) in [
        ("GATEWAY__UPSTREAM__AUTH_SCHEME", "sk_live_leak_me"),
        ("GATEWAY__UPSTREAM__API_KEY", "[not toml"),
        ("GATEWAY__UPSTREAM__ATTEMPT_TIMEOUT", "sk_live_leak_me"),
        ("GATEWAY_REDIS_URL", "sk_live_leak_me"),
    ] {
        // An accepted key would make `serve` run: check-config alone.
        let cmds: &[&str] = if var.ends_with("API_KEY") {
            &["check-config"]
        } else {
            &["check-config", "serve"]
        };
        for cmd in cmds {
            let mut c = bin();
            c.arg(cmd).env(var, value);
            if !var.ends_with("API_KEY") {
                c.env("IMPRINT_API_KEY", "k");
            }
            let out = c.output().unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if var.ends_with("API_KEY") {
                // Any text is a valid key: accepted, and still not printed.
                assert!(!all.contains(value), "{cmd} {var}: {all}");
                continue;
            }
            assert_eq!(out.status.code(), Some(2), "{cmd} {var}: {all}");
            assert!(!all.contains("leak_me"), "{cmd} {var}: {all}");
            let named = var
                .trim_start_matches("GATEWAY__")
                .to_ascii_lowercase()
                .replacen("__", ".", 1);
            assert!(
                all.contains(var) || all.contains(&named),
                "{cmd} {var}: {all}"
            );
        }
    }
}

#[test]
fn serve_refuses_to_start_without_a_key() {
    let out = bin().arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("IMPRINT_API_KEY"));
}

#[test]
fn serve_refuses_plaintext_on_a_non_loopback_address_unless_told() {
    // Refused before anything is bound: no socket on 0.0.0.0 is opened.
    let out = bin()
        .arg("serve")
        .env("IMPRINT_API_KEY", "sk_test_x")
        .env("GATEWAY_GRPC_ADDR", "0.0.0.0:50051")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.plaintext"), "{stderr}");
    assert!(stderr.contains("GATEWAY_TLS_CERT_FILE"), "{stderr}");
    // check-config says the same, and accepts the explicit setting.
    let out = check_config(&[("GATEWAY_GRPC_ADDR", "0.0.0.0:50051")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.plaintext"));
    let out = check_config(&[
        ("GATEWAY_GRPC_ADDR", "0.0.0.0:50051"),
        ("GATEWAY__SERVER__PLAINTEXT", "true"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // TLS settings must name readable files, and come as a pair.
    let out = check_config(&[("GATEWAY_TLS_CERT_FILE", "/nonexistent/cert.pem")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GATEWAY_TLS_KEY_FILE"));
    let out = check_config(&[
        ("GATEWAY_TLS_CERT_FILE", "/nonexistent/cert.pem"),
        ("GATEWAY_TLS_KEY_FILE", "/nonexistent/key.pem"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("GATEWAY_TLS_CERT_FILE: cannot read"),
        "{stderr}"
    );
    // Extra CAs for Imprint's certificate: a readable PEM file of them.
    let out = check_config(&[("GATEWAY__UPSTREAM__EXTRA_CA_FILE", "/nonexistent/ca.pem")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("upstream.extra_ca_file: cannot read"),
        "{stderr}"
    );
    let not_pem = std::env::temp_dir().join(format!("igw-cli-ca-{}.pem", std::process::id()));
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let out = check_config(&[(
        "GATEWAY__UPSTREAM__EXTRA_CA_FILE",
        not_pem.to_str().unwrap(),
    )]);
    let _ = std::fs::remove_file(&not_pem);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("upstream.extra_ca_file"), "{stderr}");
    assert!(!stderr.contains("not a certificate"), "{stderr}");
}

#[test]
fn check_config_prints_each_callers_effective_policy_without_secrets() {
    let dir = std::env::temp_dir().join(format!("igw-cli-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("callers.toml");
    std::fs::write(
        &policy,
        r#"
[[callers]]
name = "checkout"
token = "tok-secret-checkout"
allow = ["imprint.v2.CustomerService/*"]

[[callers]]
name = "card-vault"
spiffe_id = "spiffe://pay.internal/card-vault"
allow = ["imprint.v2.PaymentMethodService/GetPaymentMethod"]
pci = true
rate_per_sec = 5
burst = 10
products = ["*"]
"#,
    )
    .unwrap();
    let out = bin()
        .arg("check-config")
        .env("GATEWAY_CALLER_TOKENS_FILE", &policy)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "# caller \"checkout\"",
        "#   identified by: bearer token",
        "#   allow: imprint.v2.CustomerService/*",
        "#   products: default (default)",
        "#   rate limit: 100/s, burst 200",
        "# caller \"card-vault\"",
        "#   identified by: spiffe_id spiffe://pay.internal/card-vault",
        "#   products: *",
        "#   pci: true",
        "#   rate limit: 5/s, burst 10",
    ] {
        assert!(stdout.contains(expected), "{expected} not in:\n{stdout}");
    }
    assert!(!stdout.contains("tok-secret"), "{stdout}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sigterm_stops_serve_cleanly() {
    use std::io::{BufRead as _, BufReader};
    // Port 0: the gateway picks free ports and logs them; nothing to race for.
    let mut child = bin()
        .arg("serve")
        .env("IMPRINT_API_KEY", "sk_test")
        .env("IMPRINT_API_BASE_URL", "http://127.0.0.1:9")
        .env("GATEWAY_GRPC_ADDR", "127.0.0.1:0")
        .env("GATEWAY_HTTP_ADDR", "127.0.0.1:0")
        .env("GATEWAY_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,imprint_gateway::server=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"http_addr\"") {
                let _ = tx.send(line);
            }
        }
    });
    let listening = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("serve logs the addresses it listens on");
    let v: serde_json::Value = serde_json::from_str(&listening).unwrap();
    let http: std::net::SocketAddr = v["fields"]["http_addr"]
        .as_str()
        .or(v["http_addr"].as_str())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        std::net::TcpStream::connect(http).is_ok(),
        "listening on {http}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_example_config_is_valid() {
    let out = bin()
        .args([
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The README's main command, used the way a new user would: start
/// `sandbox`, copy the first call it prints, run it.
#[test]
fn sandbox_prints_a_first_call_that_works() {
    use std::io::{BufRead as _, BufReader};
    // Port 0: the banner prints the addresses the sandbox really bound.
    let mut child = bin()
        .arg("sandbox")
        .env("GATEWAY_GRPC_ADDR", "127.0.0.1:0")
        .env("GATEWAY_HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut first_call = None;
    let mut list = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while first_call.is_none() || list.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("sandbox printed its banner");
        let trimmed = line.trim().to_string();
        if trimmed.starts_with("cargo run --release -- call") {
            first_call = Some(trimmed);
        } else if let Some(cmd) = trimmed.strip_prefix("Every method: ") {
            list = Some(cmd.to_string());
        }
    }
    // The printed commands, with `cargo run --release --` meaning this binary.
    let run = |cmd: &str| {
        let cmd = cmd.replace(
            "cargo run --release --",
            env!("CARGO_BIN_EXE_imprint-gateway"),
        );
        Command::new("sh").arg("-c").arg(cmd).output().unwrap()
    };
    let first_call = first_call.unwrap();
    let out = run(&first_call);
    let listed = run(&list.unwrap());
    // A reader that is gone (`| head`, here `| true`) is not an error of `call`.
    let cut = Command::new("bash")
        .args(["-o", "pipefail", "-c"])
        .arg(format!("{first_call} | true").replace(
            "cargo run --release --",
            env!("CARGO_BIN_EXE_imprint-gateway"),
        ))
        .output()
        .unwrap();
    let cut_err = String::from_utf8_lossy(&cut.stderr);
    assert!(
        cut.status.success() && !cut_err.contains("panicked"),
        "{:?}: {cut_err}",
        cut.status
    );
    let missing =
        run(&first_call.replace(imprint_gateway::sandbox::seed::JOHN, "no-such-customer"));
    // A simulated transaction: the sandbox prints its verified webhooks.
    let simulate = first_call
        .replace(
            "imprint.v2.CustomerService/GetCustomer",
            "imprint.v2.SandboxService/SimulateTransactionEvent",
        )
        .replace(
            &format!(
                "{{\"customer_id\":\"{}\"}}",
                imprint_gateway::sandbox::seed::JOHN
            ),
            &format!(
                "{{\"payment_method_id\":\"{}\",\"status\":\"APPROVED\"}}",
                imprint_gateway::sandbox::seed::JOHN_CARD
            ),
        );
    let simulated = run(&simulate);
    assert!(
        simulated.status.success(),
        "{}",
        String::from_utf8_lossy(&simulated.stderr)
    );
    let event: serde_json::Value = serde_json::from_slice(&simulated.stdout).unwrap();
    assert_eq!(
        event["status"], "APPROVED",
        "enums print as Imprint spells them"
    );
    let webhook = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the sandbox printed the webhook");
        if line.starts_with("webhook TRANSACTION") {
            break line;
        }
    };
    assert!(
        webhook.contains("(signature verified)") && webhook.contains("status=APPROVED"),
        "{webhook}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let customer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(customer["first_name"], "John");
    let missing_err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing_err.contains("Code: NotFound"), "{missing_err}");
    assert!(
        missing_err.contains("google.rpc.ErrorInfo: reason=CUSTOMER_NOT_FOUND_ERROR"),
        "{missing_err}"
    );
    let listed = String::from_utf8_lossy(&listed.stdout);
    for method in [
        "imprint.v2.CustomerService/GetCustomer",
        "imprint.v2.SandboxService/SimulateReward",
    ] {
        assert!(
            listed.contains(method),
            "{method} missing from --list:\n{listed}"
        );
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "sandbox exits 0 on SIGTERM: {status:?}");
}

#[test]
fn call_reports_errors_clearly() {
    // Nothing listens: a clear local error, exit 1.
    let port = free_port();
    let out = bin()
        .args([
            "call",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "imprint.v2.CustomerService/GetCustomer",
            "{}",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    // Not JSON: refused before connecting.
    let out = bin()
        .args(["call", "imprint.v2.CustomerService/GetCustomer", "{nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
}

/// `sandbox` prints an admin token: with it, a new user rotates the
/// gateway's key against the emulator and creates a key; without it the
/// same call is refused.
#[test]
fn sandbox_admin_token_rotates_the_key_against_the_emulator() {
    use std::io::{BufRead as _, BufReader};
    let data = std::env::temp_dir().join(format!("igw-cli-sandbox-keys-{}", std::process::id()));
    let mut child = bin()
        .arg("sandbox")
        .env("GATEWAY_GRPC_ADDR", "127.0.0.1:0")
        .env("GATEWAY_HTTP_ADDR", "127.0.0.1:0")
        .env("GATEWAY_DATA_DIR", &data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut first_call, mut rotate, mut create) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while first_call.is_none() || rotate.is_none() || create.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("sandbox printed its banner");
        let trimmed = line.trim().to_string();
        if trimmed.contains("CustomerService/GetCustomer") && first_call.is_none() {
            first_call = Some(trimmed);
        } else if trimmed.contains("KeyManagementService/RotateCredential") {
            rotate = Some(trimmed);
        } else if trimmed.contains("KeyService/CreateKey") {
            create = Some(trimmed);
        }
    }
    let run = |cmd: &str| {
        let cmd = cmd.replace(
            "cargo run --release --",
            env!("CARGO_BIN_EXE_imprint-gateway"),
        );
        Command::new("sh").arg("-c").arg(cmd).output().unwrap()
    };
    let rotate = rotate.unwrap();
    let rotated = run(&rotate);
    let created = run(&create.unwrap());
    let after = run(&first_call.unwrap());
    // The same command without `--token <admin token>`: an anonymous caller.
    let words: Vec<&str> = rotate.split(' ').collect();
    let at = words.iter().position(|w| *w == "--token").unwrap();
    let anonymous = [&words[..at], &words[at + 2..]].concat().join(" ");
    let without_token = run(&anonymous);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(rotated.status.success(), "{}", text(&rotated));
    let answer: serde_json::Value = serde_json::from_slice(&rotated.stdout).unwrap();
    assert_eq!(answer["previous_deleted"], true, "{answer}");
    assert!(created.status.success(), "{}", text(&created));
    let key: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert!(
        key["key"].as_str().is_some_and(|k| k.starts_with("sk_")),
        "{key}"
    );
    assert!(
        after.status.success(),
        "calls work on the new key: {}",
        text(&after)
    );
    assert_eq!(without_token.status.code(), Some(1));
    assert!(
        text(&without_token).contains("PermissionDenied"),
        "{}",
        text(&without_token)
    );
    assert!(status.success(), "sandbox exits 0 on SIGTERM: {status:?}");
}
