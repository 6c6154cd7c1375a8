//! Whether any credentials for a store's cloud are configured at all, so that `doctor` can say
//! "no credentials" instead of blaming a permission.

use std::path::PathBuf;

/// Why requests cannot be signed, when no credentials for `url`'s cloud are configured at all
/// (in `-o` options or the environment). `None` when some are, or for local stores.
pub(crate) fn missing_credentials(url: &str, options: &[(String, String)]) -> Option<String> {
	let scheme = url.split("://").next().unwrap_or_default();
	let option = |names: &[&str]| {
		options.iter().any(|(key, _)| names.contains(&key.to_ascii_lowercase().as_str()))
	};
	let env = |names: &[&str]| names.iter().any(|name| std::env::var_os(name).is_some());
	let skip_signature = |option_name: &str, env_name: &str| {
		options.iter().any(|(k, v)| k.eq_ignore_ascii_case(option_name) && v.trim() == "true")
			|| std::env::var(env_name).is_ok_and(|v| v.trim() == "true")
	};
	match scheme {
		"s3" | "s3a" => {
			let configured = option(&["aws_access_key_id", "access_key_id"])
				|| env(&[
					"AWS_ACCESS_KEY_ID",
					"AWS_WEB_IDENTITY_TOKEN_FILE",
					"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
					"AWS_CONTAINER_CREDENTIALS_FULL_URI",
				]) || skip_signature("aws_skip_signature", "AWS_SKIP_SIGNATURE");
			(!configured).then(|| {
				"no AWS credentials are configured: set AWS_ACCESS_KEY_ID and \
				 AWS_SECRET_ACCESS_KEY (or -o aws_access_key_id=… -o aws_secret_access_key=…); \
				 without them only an EC2 instance role can sign requests"
					.to_owned()
			})
		},
		"gs" => {
			let adc = std::env::var_os("HOME").map(|home| {
				PathBuf::from(home).join(".config/gcloud/application_default_credentials.json")
			});
			let configured =
				options.iter().any(|(k, _)| k.to_ascii_lowercase().contains("service_account"))
					|| env(&[
						"GOOGLE_SERVICE_ACCOUNT",
						"GOOGLE_SERVICE_ACCOUNT_PATH",
						"GOOGLE_SERVICE_ACCOUNT_KEY",
						"GOOGLE_APPLICATION_CREDENTIALS",
					]) || skip_signature("google_skip_signature", "GOOGLE_SKIP_SIGNATURE")
					|| adc.is_some_and(|file| file.is_file());
			(!configured).then(|| {
				"no Google credentials are configured: set GOOGLE_SERVICE_ACCOUNT (a key file) or \
				 GOOGLE_APPLICATION_CREDENTIALS; without them only a GCE metadata server can sign \
				 requests"
					.to_owned()
			})
		},
		"az" | "azure" => {
			let secret = |name: &str| {
				let name = name.to_ascii_lowercase();
				["key", "sas", "token", "secret", "emulator", "federated"]
					.iter()
					.any(|word| name.contains(word))
			};
			let configured = options.iter().any(|(k, _)| secret(k))
				|| std::env::vars_os().any(|(name, _)| {
					name.to_str().is_some_and(|n| n.starts_with("AZURE_") && secret(n))
				});
			(!configured).then(|| {
				"no Azure credentials are configured: set AZURE_STORAGE_ACCOUNT_KEY, a SAS token \
				 (AZURE_STORAGE_SAS_KEY) or a service principal (AZURE_CLIENT_SECRET); without \
				 them only a managed identity can sign requests"
					.to_owned()
			})
		},
		_ => None,
	}
}
