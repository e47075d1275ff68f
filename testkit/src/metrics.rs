//! One parser of the Prometheus/OpenMetrics text exposition (`/metrics`):
//! [`value`] answers "what is this series now" (summing the samples a
//! query matches), [`families`] gives every family with its type, label
//! names and samples (for contract checks), [`by_label`] splits one
//! series by a label.

use std::collections::{BTreeMap, BTreeSet};

/// The value of `series` in exposition text: a metric name with optional
/// labels, e.g. `mensageria_server_requests_total{status="ok"}`. Samples of
/// that name whose labels include every pair given are summed, so a query
/// keeps meaning the same when a family gains a label (the broker's
/// `service`); `None` if no sample matches.
pub fn value(text: &str, series: &str) -> Option<f64> {
    let (name, wanted, _) = parse_series(series)?;
    samples(text)
        .filter(|(n, labels, _)| *n == name && wanted.iter().all(|(k, w)| labels.get(k) == Some(w)))
        .map(|(_, _, v)| v)
        .reduce(|a, b| a + b)
}

/// The samples named `name` summed by the value of their label `label`
/// (samples without it under `""`), e.g. a client's requests by `status`.
pub fn by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for (_, mut labels, v) in samples(text).filter(|(n, _, _)| n == name) {
        *sums
            .entry(labels.remove(label).unwrap_or_default())
            .or_insert(0.0) += v;
    }
    sums
}

/// The samples of an exposition (comments skipped).
fn samples(text: &str) -> impl Iterator<Item = (String, BTreeMap<String, String>, f64)> + '_ {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_sample)
}

/// One metric family of an exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Family {
    /// `counter`, `gauge`, `histogram`, …
    pub kind: String,
    /// Label names seen on its samples (`le` excluded).
    pub labels: BTreeSet<String>,
    /// Samples: (sample name, labels, value).
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Family {
    /// The sum of the samples named `sample` whose labels include every
    /// pair of `matching`.
    pub fn sum(&self, sample: &str, matching: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == sample
                    && matching
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }
}

/// Parses Prometheus/OpenMetrics text into families keyed by the name their
/// samples are queried by: the `# TYPE` name, plus `_total` for counters
/// (OpenMetrics names a counter family without it).
pub fn families(text: &str) -> BTreeMap<String, Family> {
    let mut by_type_name: BTreeMap<String, (String, Family)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                let key = if kind == "counter" && !name.ends_with("_total") {
                    format!("{name}_total")
                } else {
                    name.to_owned()
                };
                by_type_name.insert(
                    name.to_owned(),
                    (
                        key,
                        Family {
                            kind: kind.to_owned(),
                            ..Family::default()
                        },
                    ),
                );
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((name, labels, value)) = parse_sample(line) else {
            continue;
        };
        // The family: the longest TYPE name the sample name starts with.
        let family = by_type_name
            .iter_mut()
            .filter(|(n, _)| {
                name == **n
                    || name
                        .strip_prefix(n.as_str())
                        .is_some_and(|s| s.starts_with('_'))
            })
            .max_by_key(|(n, _)| n.len());
        if let Some((_, (_, f))) = family {
            f.labels
                .extend(labels.keys().filter(|k| *k != "le").cloned());
            f.samples.push((name, labels, value));
        }
    }
    by_type_name.into_values().collect()
}

/// `name{k="v",…} value [timestamp]` → parts (label values unescaped).
fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let (name, labels, rest) = parse_series(line)?;
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

/// `name{k="v",…}…` → (name, labels with values unescaped, the rest).
fn parse_series(line: &str) -> Option<(String, BTreeMap<String, String>, &str)> {
    let i = line.find(['{', ' ']).unwrap_or(line.len());
    let (name, rest) = line.split_at(i);
    let mut labels = BTreeMap::new();
    let rest = if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.trim_start_matches(',');
            if let Some(after) = body.strip_prefix('}') {
                break after;
            }
            let eq = body.find('=')?;
            let key = body[..eq].trim().to_owned();
            let mut chars = body[eq + 1..].char_indices();
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            let mut end = None;
            let mut escaped = false;
            for (i, c) in chars {
                match (escaped, c) {
                    (true, 'n') => {
                        value.push('\n');
                        escaped = false;
                    }
                    (true, c) => {
                        value.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(eq + 1 + i + 1);
                        break;
                    }
                    (false, c) => value.push(c),
                }
            }
            labels.insert(key, value);
            body = &body[end?..];
        }
    } else {
        rest
    };
    Some((name.trim().to_owned(), labels, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_queries_sum_the_samples_whose_labels_include_the_given_ones() {
        let text = "# TYPE x counter\n\
            mensageria_broker_replies_total{service=\"echo\",status=\"ok\"} 3\n\
            mensageria_broker_replies_total{service=\"work\",status=\"ok\"} 4\n\
            mensageria_broker_replies_total{service=\"echo\",status=\"timeout\"} 1\n\
            mensageria_broker_replies_total_extra 100\n\
            mensageria_server_requests_total{status=\"ok\"} 2\n";
        let q = |s: &str| value(text, s);
        assert_eq!(
            q(r#"mensageria_broker_replies_total{status="ok"}"#),
            Some(7.0)
        );
        assert_eq!(
            q(r#"mensageria_broker_replies_total{status="ok",service="echo"}"#),
            Some(3.0)
        );
        assert_eq!(q("mensageria_broker_replies_total"), Some(8.0));
        assert_eq!(
            q(r#"mensageria_server_requests_total{status="ok"}"#),
            Some(2.0)
        );
        assert_eq!(
            q(r#"mensageria_server_requests_total{status="error"}"#),
            None
        );
        assert_eq!(q("mensageria_nothing"), None);
        assert_eq!(q("mensageria_broker_replies_total_extra"), Some(100.0));
    }

    #[test]
    fn a_series_is_split_by_one_label() {
        let text = "# TYPE c counter\n\
            c_total{status=\"ok\",topic=\"a\"} 3\n\
            c_total{status=\"ok\",topic=\"b\"} 4\n\
            c_total{status=\"timeout\"} 1\n\
            c_total_other{status=\"ok\"} 100\n\
            c_total 2\n";
        let by = by_label(text, "c_total", "status");
        assert_eq!(
            by.into_iter().collect::<Vec<_>>(),
            [
                (String::new(), 2.0),
                ("ok".to_owned(), 7.0),
                ("timeout".to_owned(), 1.0)
            ]
        );
        assert!(by_label(text, "nothing_total", "status").is_empty());
    }

    #[test]
    fn samples_and_families_are_parsed() {
        let text = "# TYPE a counter\na_total{x=\"1\",y=\"q\\\"z\"} 3\n\
                    # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n\
                    # TYPE g gauge\ng 7\n# EOF\n";
        let f = families(text);
        assert_eq!(f["a_total"].kind, "counter");
        assert_eq!(f["a_total"].sum("a_total", &[("x", "1")]), 3.0);
        assert_eq!(
            f["a_total"].samples[0].1["y"], "q\"z",
            "escaped quotes in label values"
        );
        assert_eq!(f["h"].sum("h_count", &[]), 2.0);
        assert!(
            f["h"].labels.is_empty(),
            "`le` is not a label of the family"
        );
        assert_eq!(f["g"].sum("g", &[]), 7.0);
    }
}
