//! Property tests of the key builder and the query splitter: arbitrary input never panics,
//! and different (host, path, kept query) never share a key.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// Text from bytes, with the delimiters that matter over-represented.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<u8>(), 0..max).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        proptest::string::string_regex(&format!("[a-zA-Z/?#&=;%:@.\\[\\]0-9 ]{{0,{max}}}"))
            .expect("regex"),
    ]
}

/// Text from a tiny alphabet of delimiters, where different parts most often collide.
fn tiny() -> impl Strategy<Value = String> {
    prop_oneof![text(12), "[a/?&=:]{0,4}"]
}

fn ignore_list() -> impl Strategy<Value = Vec<String>> {
    vec(
        prop_oneof![Just("utm".to_string()), Just("a".to_string()), text(4)],
        0..3,
    )
}

/// The parts a key is meant to distinguish, normalised the way the key normalises them.
fn identity(
    host: &str,
    path: &str,
    query: Option<&str>,
    ignore: &[String],
) -> (String, String, Option<String>) {
    (
        normalise_host(host),
        if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        query
            .and_then(|q| kept_query(q, ignore))
            .map(|q| q.into_owned()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn different_parts_never_share_a_key(
        h1 in tiny(), p1 in tiny(), q1 in proptest::option::of(tiny()),
        h2 in tiny(), p2 in tiny(), q2 in proptest::option::of(tiny()),
        ignore in ignore_list(),
    ) {
        let k1 = build_key(&h1, &p1, q1.as_deref(), &ignore);
        let k2 = build_key(&h2, &p2, q2.as_deref(), &ignore);
        let same = identity(&h1, &p1, q1.as_deref(), &ignore) == identity(&h2, &p2, q2.as_deref(), &ignore);
        prop_assert_eq!(k1 == k2, same, "{:?} / {:?}", k1, k2);
    }

    /// One text cut into host, path and query at different points: the shape a collision
    /// between different parts takes.
    #[test]
    fn one_text_cut_differently_never_shares_a_key(
        whole in "[a/?&=:%]{0,12}", cuts in proptest::array::uniform4(0usize..13),
        ignore in ignore_list(),
    ) {
        let part = |a: usize, b: usize| {
            let (a, b) = (a.min(whole.len()), b.min(whole.len()));
            let (a, b) = (a.min(b), a.max(b));
            (&whole[..a], &whole[a..b], &whole[b..])
        };
        let (h1, p1, q1) = part(cuts[0], cuts[1]);
        let (h2, p2, q2) = part(cuts[2], cuts[3]);
        let k1 = build_key(h1, p1, Some(q1), &ignore);
        let k2 = build_key(h2, p2, Some(q2), &ignore);
        let same = identity(h1, p1, Some(q1), &ignore) == identity(h2, p2, Some(q2), &ignore);
        prop_assert_eq!(k1 == k2, same, "{:?} / {:?}", k1, k2);
    }

    /// The attack shape: a host carrying part of a path against the real host and path.
    #[test]
    fn a_host_never_moves_a_path(
        host in "[a-z]{1,8}", moved in "/[a-z/]{0,8}", path in "/[a-z/]{0,8}",
    ) {
        let attacker = build_key(&format!("{host}{moved}"), &path, None, &[]);
        let victim = build_key(&host, &format!("{moved}{path}"), None, &[]);
        prop_assert_ne!(attacker, victim);
    }

    #[test]
    fn query_splitter_keeps_exactly_the_unignored_parameters(q in text(24), ignore in ignore_list()) {
        let _ = ambiguous_query(&q, &ignore);
        if let Some(kept) = kept_query(&q, &ignore)
            && !ignore.is_empty()
        {
            for kv in kept.split('&') {
                let name = kv.split('=').next().unwrap_or("");
                prop_assert!(!ignore.iter().any(|i| i == name), "{} kept in {}", name, kept);
                prop_assert!(q.contains(kv));
            }
        }
    }

    /// A dropped parameter with `;` or an encoded `&`, `;`, `=` is always caught.
    #[test]
    fn cloaking_dropped_parameters_are_ambiguous(
        before in "[a-z0-9=]{0,6}", cloak in prop_oneof![Just(";"), Just("%26"), Just("%3b"), Just("%3B"), Just("%3d"), Just("%3D")],
        after in "[a-z0-9=]{0,6}",
    ) {
        let q = format!("id=1&utm={before}{cloak}{after}");
        prop_assert!(ambiguous_query(&q, &["utm".to_string()]));
        prop_assert!(!ambiguous_query(&q, &[]));
    }
}
