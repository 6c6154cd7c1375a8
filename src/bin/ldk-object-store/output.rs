//! Text or JSON output, progress bars, and exit codes, in one place for every command.

use std::io::IsTerminal;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
	/// Nothing wrong.
	Clean,
	/// The command ran and found problems.
	Problems,
	/// The command could not do its job (an unreachable store), after reporting what it found.
	CouldNotRun,
}

impl Outcome {
	pub(crate) fn from_problems(problems: usize) -> Self {
		if problems == 0 {
			Outcome::Clean
		} else {
			Outcome::Problems
		}
	}

	pub(crate) fn exit_code(self) -> ExitCode {
		match self {
			Outcome::Clean => ExitCode::SUCCESS,
			Outcome::Problems => ExitCode::from(1),
			Outcome::CouldNotRun => ExitCode::from(2),
		}
	}
}

/// A command's result so far: `Ok` with its outcome, or a message for exit code 2.
pub(crate) type CommandResult = Result<Outcome, String>;

pub(crate) struct Output {
	json: bool,
}

impl Output {
	pub(crate) fn new(json: bool) -> Self {
		Output { json }
	}

	/// Prints a command's report: `text` for people, `json` for `--json`.
	pub(crate) fn report(&self, text: &str, json: Value) {
		if self.json {
			println!("{json:#}");
		} else {
			print!("{text}");
		}
	}

	/// Reports an error that kept the command from running; exit code 2.
	pub(crate) fn fail(&self, message: &str) -> ExitCode {
		if self.json {
			println!("{:#}", serde_json::json!({ "error": message }));
		} else {
			eprintln!("error: {message}");
		}
		ExitCode::from(2)
	}

	/// A progress bar on stderr, or a hidden one for JSON output and non-terminals.
	pub(crate) fn progress(&self, len: u64, what: &str) -> ProgressBar {
		if self.json || !std::io::stderr().is_terminal() {
			return ProgressBar::hidden();
		}
		let bar = ProgressBar::new(len);
		let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
			.unwrap_or_else(|_| ProgressStyle::default_bar())
			.progress_chars("=> ");
		bar.set_style(style);
		bar.set_message(what.to_owned());
		bar
	}
}

/// A URL without any user or password part, for messages.
pub(crate) fn redact(url: &str) -> String {
	match url::Url::parse(url) {
		Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
			// Both setters only fail for URLs that cannot have credentials at all.
			let _ = parsed.set_username("");
			let _ = parsed.set_password(None);
			parsed.to_string()
		},
		_ => url.to_owned(),
	}
}

/// `1234567` as `1.2 MB`.
pub(crate) fn bytes(n: u64) -> String {
	indicatif::HumanBytes(n).to_string()
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn credentials_never_reach_messages() {
		assert_eq!(redact("s3://AKIA:secret@bucket/p"), "s3://bucket/p");
		assert_eq!(redact("s3://bucket/p"), "s3://bucket/p");
	}
}
