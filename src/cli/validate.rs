//! `keyscore validate`: the checks an upload makes, with nothing stored and no store needed.

use anyhow::Context as _;

use crate::model::{spec_checksum, ModelSpec, Output};

/// Arguments of `keyscore validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model spec (JSON); `-` for stdin.
    pub file: std::path::PathBuf,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the spec from stdin")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let canonical = crate::store::check_spec(&text)?;
    let model = ModelSpec::from_json(canonical.as_bytes())?.build()?;
    let output = match model.output() {
        Output::Regression => "regression".to_string(),
        Output::Classification(classes) => format!("classes {}", classes.join(", ")),
    };
    super::write_stdout(&format!(
        "valid: {} model, {} features ({}), {output}; checksum as stored {}\n",
        model.kind_name(),
        model.features().len(),
        model.features().join(", "),
        spec_checksum(&canonical)
    ))
}
