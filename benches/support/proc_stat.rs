//! Shared by the benches that read `/proc/<pid>/stat`.

/// Clock ticks per second (`getconf CLK_TCK`; 100 when it cannot say).
pub(crate) fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
