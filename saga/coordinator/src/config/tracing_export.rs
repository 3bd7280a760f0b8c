//! `[tracing]`: exporting choreo's spans to an OpenTelemetry collector (OTLP over HTTP).

use serde::{Deserialize, Serialize};

/// `[tracing]`: OpenTelemetry export of choreo's spans (`choreo.ingest`, `choreo.publish`,
/// `choreo.process`, `choreo.saga`), each a child of the `traceparent` it handles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP base address (`http://collector:4318`; spans go to
    /// `<endpoint>/v1/traces` as protobuf). Unset: the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, used as the full address) when set, else no
    /// export (the `traceparent` of every record still carries the trace through).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans (the standard `OTEL_SERVICE_NAME`, when set,
    /// takes precedence).
    pub service_name: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "choreo".into(),
        }
    }
}

impl TracingConfig {
    /// Checks the endpoint is an http(s) address and the name is not empty; the error names
    /// the field.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(e) = &self.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err((
                "tracing.otlp_endpoint",
                format!("\"{e}\" is not an http:// or https:// address"),
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err(("tracing.service_name", "must not be empty".into()));
        }
        Ok(())
    }
}
