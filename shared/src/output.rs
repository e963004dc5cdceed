//! Data on stdout the kubectl way: tables (header row, no borders, columns three spaces apart,
//! ANSI-aware), and `-o json|yaml`.

use std::io::{self, Write};

use crate::flags::OutputFormat;

/// Write a table the way kubectl prints one: a header row, no borders, columns left-aligned and
/// three spaces apart, no trailing blanks. ANSI colour in a cell does not upset the alignment.
pub fn write_table<const N: usize>(
    out: &mut impl Write,
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> io::Result<()> {
    let mut builder = tabled::builder::Builder::default();
    builder.push_record(header);
    for row in rows {
        builder.push_record(row);
    }
    let mut table = builder.build();
    table
        .with(tabled::settings::Style::empty())
        .with(tabled::settings::Padding::new(0, 3, 0, 0));
    for line in table.to_string().lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Serialize `value` as YAML text (the way `kubectl get -o yaml` prints objects).
pub fn to_yaml<T: serde::Serialize>(value: &T) -> Result<String, io::Error> {
    serde_saphyr::to_string(value).map_err(|e| io::Error::other(e.to_string()))
}

/// Print `value` as JSON or YAML, or return `false` for table output (the caller draws it).
pub fn write_data<T: serde::Serialize>(
    out: &mut impl Write,
    format: OutputFormat,
    value: &T,
) -> io::Result<bool> {
    match format {
        OutputFormat::Table => Ok(false),
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
            writeln!(out)?;
            Ok(true)
        }
        OutputFormat::Yaml => {
            out.write_all(to_yaml(value)?.as_bytes())?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_like_kubectl_even_with_colour() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            ["NAME", "STATUS"],
            [
                ["a".to_string(), "\x1b[31mfail\x1b[0m".to_string()],
                ["longer-name".to_string(), "pass".to_string()],
            ],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "NAME          STATUS\na             \x1b[31mfail\x1b[0m\nlonger-name   pass\n"
        );
    }
}
