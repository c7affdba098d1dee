//! PyPI packages the tests use: `rotel`, a real OpenTelemetry collector whose `rotel-agent`
//! binary ships inside the package (the OTLP export tests send to it).

use anyhow::{Context, Result};

use crate::cmd::Cmd;

/// Pinned: the tests read rotel's debug log, whose format is not a stable interface.
const ROTEL_VERSION: &str = "0.0.1a15";

/// Installs rotel with pip unless this exact version is there.
pub fn ensure() -> Result<String> {
    let installed = Cmd::new(
        "python3",
        &[
            "-c",
            "import importlib.metadata as m; print(m.version('rotel'))",
        ],
    )
    .query()
    .ok();
    if installed.as_deref().map(str::trim) == Some(ROTEL_VERSION) {
        return Ok(format!("rotel {ROTEL_VERSION}"));
    }
    println!("rotel {ROTEL_VERSION} missing (found {installed:?}); installing it with pip");
    let spec = format!("rotel=={ROTEL_VERSION}");
    Cmd::new(
        "python3",
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &spec,
        ],
    )
    .run()
    .context("installing rotel from PyPI (python3 -m pip install rotel) failed")?;
    Ok(format!("rotel {ROTEL_VERSION}"))
}
