//! Property of src/utilities.rs: building an HTTP date and parsing it back gives the same
//! time.
use waitress::utilities::{build_http_date, parse_http_date};

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn http_dates_round_trip(when in 0i64..8_000_000_000) {
        proptest::prop_assert_eq!(parse_http_date(&build_http_date(when)), when);
    }
}
