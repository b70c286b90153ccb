//! WeChat's value rules for subscribe-message data (`docs/wechat.md`, "Subscribe data value
//! rules"): a keyword's key names its rule (`thing1` → `thing`), and a value that breaks
//! the rule makes WeChat refuse the whole send with 47003.
//!
//! Lengths count Unicode scalar values. Characters fall in one class each: Chinese (CJK
//! ideographs), letters (ASCII), digits (ASCII), symbols (the common punctuation and signs
//! listed in `class`), control characters (never allowed), and everything else (emoji,
//! other scripts), which no rule accepts.

use std::borrow::Cow;

use chrono::NaiveDate;

/// The rule of a keyword, named by its key without the trailing digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    Thing,
    Number,
    Letter,
    Symbol,
    CharacterString,
    Time,
    Date,
    Amount,
    PhoneNumber,
    CarNumber,
    Name,
    Phrase,
    /// `enum_string…`: one of the template's listed values.
    Enum,
    /// A key WeChat may add later; only the no-control-characters rule is known for it.
    Unknown(String),
}

impl Rule {
    /// The rule of a keyword key: `thing1` → `Thing`, `enum_string2` → `Enum`.
    pub fn of_key(key: &str) -> Self {
        match key.trim_end_matches(|c: char| c.is_ascii_digit()) {
            "thing" => Self::Thing,
            "number" => Self::Number,
            "letter" => Self::Letter,
            "symbol" => Self::Symbol,
            "character_string" => Self::CharacterString,
            "time" => Self::Time,
            "date" => Self::Date,
            "amount" => Self::Amount,
            "phone_number" => Self::PhoneNumber,
            "car_number" => Self::CarNumber,
            "name" => Self::Name,
            "phrase" => Self::Phrase,
            "enum_string" | "enum" => Self::Enum,
            other => Self::Unknown(other.to_string()),
        }
    }

    /// The name the API shows (`enum` for `enum_string` keys).
    pub fn name(&self) -> &str {
        match self {
            Self::Thing => "thing",
            Self::Number => "number",
            Self::Letter => "letter",
            Self::Symbol => "symbol",
            Self::CharacterString => "character_string",
            Self::Time => "time",
            Self::Date => "date",
            Self::Amount => "amount",
            Self::PhoneNumber => "phone_number",
            Self::CarNumber => "car_number",
            Self::Name => "name",
            Self::Phrase => "phrase",
            Self::Enum => "enum",
            Self::Unknown(name) => name,
        }
    }

    /// Whether `data_policy: truncate` cuts an over-long value of this rule.
    pub fn truncatable(&self) -> bool {
        matches!(
            self,
            Self::Thing | Self::Name | Self::CharacterString | Self::Letter | Self::Number
        )
    }

    /// Checks one value; the error says what the rule wants.
    pub fn check(&self, value: &str, enum_values: &[String]) -> Result<(), String> {
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        if let Some(c) = value.chars().find(|c| class(*c) == Class::Control) {
            return Err(format!(
                "must not contain control characters such as line breaks (found U+{:04X})",
                u32::from(c)
            ));
        }
        let n = value.chars().count();
        let longer = |max: usize| -> Result<(), String> {
            if n > max {
                Err(format!("at most {max} characters, got {n}"))
            } else {
                Ok(())
            }
        };
        let only = |allowed: &[Class], what: &str| -> Result<(), String> {
            match value.chars().find(|c| !allowed.contains(&class(*c))) {
                Some(c) => Err(format!("{what} only, not {c:?}")),
                None => Ok(()),
            }
        };
        use Class::{Chinese, Digit, Letter, Symbol};
        match self {
            Self::Thing => {
                longer(20)?;
                only(
                    &[Chinese, Letter, Digit, Symbol],
                    "Chinese, letters, digits or symbols",
                )
            }
            Self::Number => {
                longer(32)?;
                if is_decimal(value) {
                    Ok(())
                } else {
                    Err("digits only, with at most one decimal point between them".into())
                }
            }
            Self::Letter => {
                longer(32)?;
                only(&[Letter], "letters")
            }
            Self::Symbol => {
                longer(5)?;
                only(&[Symbol], "symbols")
            }
            Self::CharacterString => {
                longer(32)?;
                only(&[Letter, Digit, Symbol], "letters, digits or symbols")
            }
            Self::PhoneNumber => {
                longer(17)?;
                only(&[Digit, Symbol], "digits or symbols")
            }
            Self::Phrase => {
                longer(5)?;
                only(&[Chinese], "Chinese characters")
            }
            Self::Name => {
                only(
                    &[Chinese, Letter, Symbol],
                    "Chinese characters, letters or symbols",
                )?;
                if value.chars().any(|c| class(c) == Chinese) {
                    if n > 10 {
                        return Err(format!(
                            "at most 10 characters when it holds Chinese, got {n}"
                        ));
                    }
                    Ok(())
                } else {
                    longer(20)
                }
            }
            Self::CarNumber => {
                longer(8)?;
                let last = n - 1;
                let ok = value.chars().enumerate().all(|(i, c)| match class(c) {
                    Letter | Digit => true,
                    Chinese => i == 0 || i == last,
                    _ => false,
                });
                if ok {
                    Ok(())
                } else {
                    Err("letters or digits, with Chinese only as the first or last character"
                        .into())
                }
            }
            Self::Time => match moment_range(value) {
                Some(parts) if parts.iter().all(|m| m.time) => Ok(()),
                _ => Err(
                    "a 24-hour time (15:01 or 15:01:30), optionally after a date; two joined by ~ for a range"
                        .into(),
                ),
            },
            Self::Date => match moment_range(value) {
                Some(parts) if parts.iter().all(|m| m.date) => Ok(()),
                _ => Err(
                    "a date (2019年10月1日, 2019-10-01, 2019/10/01, 2019.10.01, 2019-10 or 10-01), optionally with a 24-hour time; two joined by ~ for a range"
                        .into(),
                ),
            },
            Self::Amount => {
                if is_amount(value) {
                    Ok(())
                } else {
                    Err("one currency symbol, then at most 10 digits (a decimal point allowed), optionally ending in 元".into())
                }
            }
            Self::Enum => {
                if enum_values.is_empty() || enum_values.iter().any(|v| v == value) {
                    Ok(())
                } else {
                    Err(format!("one of {}", enum_values.join(", ")))
                }
            }
            Self::Unknown(_) => Ok(()),
        }
    }

    /// Cuts a value longer than this rule allows to the longest prefix of an allowed
    /// length (`data_policy: truncate`). Values of other rules, and values within their
    /// limit, are returned as they are.
    pub fn truncate<'a>(&self, value: &'a str) -> Cow<'a, str> {
        let limit = match self {
            Self::Thing => 20,
            Self::CharacterString | Self::Letter | Self::Number => 32,
            // 20 letters and symbols, or 10 characters once a Chinese one is among them:
            // keep everything before the first Chinese character that would break 20.
            Self::Name => match value
                .chars()
                .take(21)
                .position(|c| class(c) == Class::Chinese)
            {
                Some(first_chinese) if first_chinese < 20 => first_chinese.max(10),
                _ => 20,
            },
            _ => return Cow::Borrowed(value),
        };
        match value.char_indices().nth(limit) {
            None => Cow::Borrowed(value),
            Some((end, _)) => {
                let mut cut = &value[..end];
                if *self == Self::Number {
                    // "123." is not a number; the point goes with its missing decimals.
                    cut = cut.trim_end_matches('.');
                }
                Cow::Borrowed(cut)
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Chinese,
    Letter,
    Digit,
    Symbol,
    Control,
    /// Emoji, letters of other scripts, invisible formatting characters: accepted by no rule.
    Other,
}

fn class(c: char) -> Class {
    match c {
        '0'..='9' => Class::Digit,
        'a'..='z' | 'A'..='Z' => Class::Letter,
        // Line and paragraph separators break lines like \n does.
        '\u{2028}' | '\u{2029}' => Class::Control,
        c if c.is_control() => Class::Control,
        // CJK ideographs: extension A, the unified block, compatibility, extensions B–H.
        '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{323AF}' => Class::Chinese,
        // Printable ASCII punctuation and the space.
        ' '..='~' => Class::Symbol,
        // Latin-1 signs (¡ … ¿, × ÷), general punctuation (– — ‘ ’ “ ” … ‰ ※), currency
        // signs, letterlike signs and number forms (℃ № Ⅱ), arrows, mathematical
        // operators, circled numbers, geometric shapes (■ □ ▲ ○ ●), ★ ☆, CJK punctuation
        // (、 。 《 》 【 】 〜 and the ideographic space), full-width forms (！ ， ＄ ￥).
        '\u{A1}'..='\u{BF}'
        | '\u{D7}'
        | '\u{F7}'
        | '\u{2010}'..='\u{2027}'
        | '\u{2030}'..='\u{205E}'
        | '\u{20A0}'..='\u{20C0}'
        | '\u{2100}'..='\u{22FF}'
        | '\u{2460}'..='\u{24FF}'
        | '\u{25A0}'..='\u{25FF}'
        | '\u{2605}'
        | '\u{2606}'
        | '\u{3000}'..='\u{303F}'
        | '\u{FF01}'..='\u{FF65}'
        | '\u{FFE0}'..='\u{FFE6}' => Class::Symbol,
        _ => Class::Other,
    }
}

/// ASCII digits with at most one decimal point between two of them.
fn is_decimal(v: &str) -> bool {
    let (int, frac) = match v.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (v, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && frac.is_none_or(digits)
}

fn is_currency_symbol(c: char) -> bool {
    matches!(c,
        '$' | '\u{A2}'..='\u{A5}' | '\u{E3F}' | '\u{20A0}'..='\u{20C0}'
        | '\u{FE69}' | '\u{FF04}' | '\u{FFE0}' | '\u{FFE1}' | '\u{FFE5}' | '\u{FFE6}')
}

/// `¥100`, `$12.50`, `￥8元`: one currency symbol, at most 10 digits in all, one optional
/// decimal point, an optional trailing 元.
fn is_amount(v: &str) -> bool {
    let mut chars = v.chars();
    if !chars.next().is_some_and(is_currency_symbol) {
        return false;
    }
    let rest = chars.as_str();
    let number = rest.strip_suffix('元').unwrap_or(rest);
    is_decimal(number) && number.bytes().filter(u8::is_ascii_digit).count() <= 10
}

/// What one side of a `time` or `date` value holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Moment {
    date: bool,
    time: bool,
}

/// One moment, or two joined by `~` (spaces around it allowed).
fn moment_range(v: &str) -> Option<Vec<Moment>> {
    let parts: Vec<&str> = v.split('~').map(|p| p.trim_matches(' ')).collect();
    if parts.len() > 2 {
        return None;
    }
    parts.into_iter().map(moment).collect()
}

/// A date, a 24-hour time, or a date then a time.
fn moment(s: &str) -> Option<Moment> {
    if let Some(time_ok) = time_of_day(s) {
        return time_ok.then_some(Moment {
            date: false,
            time: true,
        });
    }
    let rest = &s[date_prefix(s)?..];
    if rest.is_empty() {
        return Some(Moment {
            date: true,
            time: false,
        });
    }
    time_of_day(rest.trim_start_matches(' '))
        .filter(|ok| *ok)
        .map(|_| Moment {
            date: true,
            time: true,
        })
}

/// `Some(valid)` when `s` has the shape of a time (`H:MM`, `HH:MM`, `HH:MM:SS`).
fn time_of_day(s: &str) -> Option<bool> {
    let fields: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&fields.len()) || !fields.iter().all(|f| is_digits(f)) {
        return None;
    }
    let hour_ok = (1..=2).contains(&fields[0].len());
    if !hour_ok || fields[1..].iter().any(|f| f.len() != 2) {
        return None;
    }
    let n = |f: &str| f.parse::<u32>().unwrap_or(u32::MAX);
    Some(n(fields[0]) < 24 && fields[1..].iter().all(|f| n(f) < 60))
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The length in bytes of a valid date at the start of `s`. After 日 a time may follow
/// at once; a numeric date runs to the first space (so `2019-10-0115:01` is no date).
fn date_prefix(s: &str) -> Option<usize> {
    // 2019年10月1日
    if let Some((year, rest)) = s.split_once('年') {
        let (month, rest) = rest.split_once('月')?;
        let (day, _) = rest.split_once('日')?;
        let len = year.len() + month.len() + day.len() + 3 * '年'.len_utf8();
        let ok = year.len() == 4
            && (1..=2).contains(&month.len())
            && (1..=2).contains(&day.len())
            && [year, month, day].iter().all(|f| is_digits(f));
        return (ok && valid_date(Some(year), month, Some(day))).then_some(len);
    }
    // 2019-10-01, 2019/10/01, 2019.10.01, 2019-10, 10-01: the date runs to the first space.
    let date = s.split(' ').next().unwrap_or(s);
    let sep = date.chars().find(|c| matches!(c, '-' | '/' | '.'))?;
    let fields: Vec<&str> = date.split(sep).collect();
    if !fields.iter().all(|f| is_digits(f)) {
        return None;
    }
    let ok = match fields.as_slice() {
        [y, m, d] if y.len() == 4 && m.len() <= 2 && d.len() <= 2 => {
            valid_date(Some(y), m, Some(d))
        }
        [y, m] if y.len() == 4 && m.len() <= 2 => valid_date(Some(y), m, None),
        [m, d] if m.len() <= 2 && d.len() <= 2 => valid_date(None, m, Some(d)),
        _ => false,
    };
    ok.then_some(date.len())
}

fn valid_date(year: Option<&str>, month: &str, day: Option<&str>) -> bool {
    let num = |s: &str| s.parse::<u32>().ok();
    let (Some(m), Some(d)) = (num(month), day.map_or(Some(1), num)) else {
        return false;
    };
    // Without a year, 02-29 is a real date (of a leap year).
    let y = year.and_then(|y| y.parse::<i32>().ok()).unwrap_or(2000);
    NaiveDate::from_ymd_opt(y, m, d).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of the table, with values that pass and values that fail. The sandbox's
    /// own implementation of the same table is checked against these cases below.
    pub(crate) const CASES: &[(&str, &str, bool)] = &[
        // thing: up to 20 of Chinese, letters, digits, symbols
        ("thing1", "Your order shipped", true),
        ("thing1", "会议室A-3（二楼）", true),
        ("thing1", "一二三四五六七八九十一二三四五六七八九十", true),
        (
            "thing1",
            "一二三四五六七八九十一二三四五六七八九十一",
            false,
        ),
        ("thing1", "abcdefghijklmnopqrstu", false),
        ("thing1", "订单已发货 ★", true),
        ("thing1", "订单已发货 😀", false),
        ("thing1", "line one\nline two", false),
        ("thing1", "tab\there", false),
        ("thing1", "", false),
        ("thing1", "Café", false),
        // number: up to 32 digits, a decimal point allowed
        ("number2", "12345.67", true),
        ("number2", "0", true),
        ("number2", "12345678901234567890123456789012", true),
        ("number2", "123456789012345678901234567890123", false),
        ("number2", "12a", false),
        ("number2", "1.2.3", false),
        ("number2", ".5", false),
        ("number2", "5.", false),
        ("number2", "-5", false),
        ("number2", "１２", false),
        // letter: up to 32 letters only
        ("letter3", "abcXYZ", true),
        ("letter3", "abcdefghijklmnopqrstuvwxyzABCDEF", true),
        ("letter3", "abcdefghijklmnopqrstuvwxyzABCDEFG", false),
        ("letter3", "abc1", false),
        ("letter3", "ab cd", false),
        ("letter3", "中", false),
        // symbol: up to 5 symbols only
        ("symbol4", "%", true),
        ("symbol4", "★☆、。！", true),
        ("symbol4", "!!!!!!", false),
        ("symbol4", "a!", false),
        ("symbol4", "1%", false),
        // character_string: up to 32 digits, letters, symbols
        ("character_string5", "ORDER-2026-0001", true),
        ("character_string5", "A1_b2/c3#", true),
        (
            "character_string5",
            "12345678901234567890123456789012",
            true,
        ),
        (
            "character_string5",
            "123456789012345678901234567890123",
            false,
        ),
        ("character_string5", "单号123", false),
        // time: a 24-hour time, optionally after a date; ranges with ~
        ("time6", "15:01", true),
        ("time6", "15:01:30", true),
        ("time6", "9:05", true),
        ("time6", "2019年10月1日 15:01", true),
        ("time6", "2019年10月1日15:01", true),
        ("time6", "2019-10-01 15:01", true),
        ("time6", "10-01 15:01", true),
        ("time6", "15:01~16:30", true),
        ("time6", "2019-10-01 15:01 ~ 2019-10-02 09:00", true),
        ("time6", "24:00", false),
        ("time6", "15:60", false),
        ("time6", "15:1", false),
        ("time6", "3pm", false),
        ("time6", "2019-10-01", false),
        ("time6", "2019-10-0115:01", false),
        ("time6", "15:01~16:00~17:00", false),
        ("time6", "15:01~", false),
        // date: the listed formats, optionally with a time; ranges with ~
        ("date7", "2019年10月1日", true),
        ("date7", "2019-10-01", true),
        ("date7", "2019/10/01", true),
        ("date7", "2019.10.01", true),
        ("date7", "2019-10", true),
        ("date7", "10-01", true),
        ("date7", "02-29", true),
        ("date7", "2019-10-01 15:01", true),
        ("date7", "2019年10月1日 15:01:30", true),
        ("date7", "2019-10-01 ~ 2019-10-07", true),
        ("date7", "2019年10月1日~2019年10月7日", true),
        ("date7", "2019-02-29", false),
        ("date7", "2019-13-01", false),
        ("date7", "2019-10-32", false),
        ("date7", "19-10-01", false),
        ("date7", "2019/10-01", false),
        ("date7", "15:01", false),
        ("date7", "yesterday", false),
        ("date7", "2019年10月", false),
        ("date7", "2019年+1月1日", false),
        ("date7", "2019-10-01 25:00", false),
        // amount: one currency symbol, up to 10 digits, decimals, optional 元
        ("amount8", "¥100", true),
        ("amount8", "$12.50", true),
        ("amount8", "€3", true),
        ("amount8", "£0.99", true),
        ("amount8", "￥88元", true),
        ("amount8", "¥12345678.90", true),
        ("amount8", "¥12345678901", false),
        ("amount8", "¥123456789.01", false),
        ("amount8", "100元", false),
        ("amount8", "100", false),
        ("amount8", "¥¥100", false),
        ("amount8", "¥1,000", false),
        ("amount8", "¥", false),
        ("amount8", "¥10元元", false),
        // phone_number: up to 17 digits and symbols
        ("phone_number9", "+86-0766-66888866", true),
        ("phone_number9", "13800138000", true),
        ("phone_number9", "(010) 1234-5678", true),
        ("phone_number9", "+86-0766-668888661", false),
        ("phone_number9", "call 110", false),
        // car_number: up to 8; Chinese only first or last, the rest letters or digits
        ("car_number10", "粤A8Z888挂", true),
        ("car_number10", "京A12345", true),
        ("car_number10", "A12345", true),
        ("car_number10", "粤A8Z8888挂", false),
        ("car_number10", "粤A8中888", false),
        ("car_number10", "粤A-8888", false),
        // name: 10 Chinese, or 20 letters/symbols; a mix counts as Chinese
        ("name11", "张三", true),
        ("name11", "欧阳一二三四五六七八", true),
        ("name11", "欧阳一二三四五六七八九", false),
        ("name11", "Michael Jordan", true),
        ("name11", "Alexandra Richardson", true),
        ("name11", "Alexandra Richardsons", false),
        ("name11", "迈克尔·乔丹", true),
        ("name11", "Tom张三", true),
        ("name11", "Tommy 张三丰老师", false),
        ("name11", "Agent 007", false),
        // phrase: up to 5 Chinese characters only
        ("phrase12", "配送中", true),
        ("phrase12", "已完成配送", true),
        ("phrase12", "已完成配送了", false),
        ("phrase12", "shipped", false),
        ("phrase12", "配送中!", false),
        // unknown keys: only control characters are refused
        ("short_thing13", "anything goes 😀", true),
        ("short_thing13", "no\nbreaks", false),
    ];

    #[test]
    fn every_rule_of_the_table_passes_and_fails_the_listed_values() {
        for (key, value, ok) in CASES {
            let result = Rule::of_key(key).check(value, &[]);
            assert_eq!(result.is_ok(), *ok, "{key} = {value:?}: {result:?}");
        }
    }

    #[test]
    fn the_sandbox_applies_the_same_table() {
        for (key, value, ok) in CASES {
            assert_eq!(
                formpush_sandbox::subscribe_value_ok(key, value, None),
                *ok,
                "sandbox: {key} = {value:?}"
            );
        }
    }

    #[test]
    fn enum_values_must_be_one_of_the_list() {
        let values = vec!["客厅".to_string(), "卧室".to_string()];
        let rule = Rule::of_key("enum_string2");
        assert_eq!(rule, Rule::Enum);
        assert!(rule.check("客厅", &values).is_ok());
        let err = rule.check("厨房", &values).unwrap_err();
        assert!(err.contains("客厅, 卧室"), "{err}");
        assert!(rule.check("客厅 ", &values).is_err());
        assert!(formpush_sandbox::subscribe_value_ok(
            "enum_string2",
            "卧室",
            Some(&values)
        ));
        assert!(!formpush_sandbox::subscribe_value_ok(
            "enum_string2",
            "厨房",
            Some(&values)
        ));
    }

    #[test]
    fn keys_name_their_rule() {
        assert_eq!(Rule::of_key("thing01"), Rule::Thing);
        assert_eq!(Rule::of_key("character_string12"), Rule::CharacterString);
        assert_eq!(Rule::of_key("enum_string3").name(), "enum");
        assert_eq!(Rule::of_key("phone_number4").name(), "phone_number");
        assert_eq!(
            Rule::of_key("short_thing5"),
            Rule::Unknown("short_thing".into())
        );
    }

    #[test]
    fn errors_say_what_the_rule_wants() {
        let err = Rule::Thing.check(&"字".repeat(23), &[]).unwrap_err();
        assert_eq!(err, "at most 20 characters, got 23");
        let err = Rule::Letter.check("ab1", &[]).unwrap_err();
        assert_eq!(err, "letters only, not '1'");
    }

    #[test]
    fn truncate_cuts_to_the_limit_in_characters() {
        let long = "一二三四五六七八九十".repeat(3);
        assert_eq!(
            Rule::Thing.truncate(&long),
            "一二三四五六七八九十".repeat(2)
        );
        assert_eq!(Rule::Thing.truncate("short"), "short");
        let digits = format!("{}.5", "1".repeat(32));
        assert_eq!(Rule::Number.truncate(&digits), "1".repeat(32));
        let cut_at_point = format!("{}.55", "1".repeat(31));
        assert_eq!(Rule::Number.truncate(&cut_at_point), "1".repeat(31));
        assert_eq!(Rule::Letter.truncate(&"a".repeat(40)), "a".repeat(32));
        assert_eq!(
            Rule::CharacterString.truncate(&"A-".repeat(20)),
            "A-".repeat(16)
        );
        assert_eq!(Rule::Name.truncate(&"x".repeat(25)), "x".repeat(20));
        assert_eq!(
            Rule::Name.truncate("欧阳一二三四五六七八九十"),
            "欧阳一二三四五六七八"
        );
        // Letters before a late Chinese character are kept when they fit on their own.
        assert_eq!(
            Rule::Name.truncate("Christopher Columbus 哥伦布"),
            "Christopher Columbus"
        );
        assert_eq!(
            Rule::Name.truncate("Tom Smith 汤姆史密斯先生"),
            "Tom Smith "
        );
        assert_eq!(Rule::Time.truncate("15:01:30:99"), "15:01:30:99");
        assert_eq!(Rule::Phrase.truncate("已完成配送了"), "已完成配送了");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Strings mixing every character class, multi-byte ones included.
        fn mixed() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    proptest::char::range('a', 'z'),
                    proptest::char::range('0', '9'),
                    proptest::char::range('一', '龥'),
                    Just(' '),
                    Just('.'),
                    Just('-'),
                    Just(':'),
                    Just('~'),
                    Just('·'),
                    Just('¥'),
                    Just('元'),
                    Just('年'),
                    Just('\n'),
                    Just('😀'),
                    any::<char>(),
                ],
                0..45,
            )
            .prop_map(|cs| cs.into_iter().collect())
        }

        /// Strings from the characters dates, times and amounts are made of, so that the
        /// formats are hit and missed by a little.
        fn shaped() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    4 => proptest::char::range('0', '9'),
                    1 => proptest::sample::select(vec![
                        '-', '/', '.', ':', ' ', '~', '年', '月', '日', '¥', '元', '$', '+'
                    ]),
                ],
                0..25,
            )
            .prop_map(|cs| cs.into_iter().collect())
        }

        fn rule_key() -> impl Strategy<Value = &'static str> {
            prop_oneof![
                Just("thing1"),
                Just("number2"),
                Just("letter3"),
                Just("symbol4"),
                Just("character_string5"),
                Just("time6"),
                Just("date7"),
                Just("amount8"),
                Just("phone_number9"),
                Just("car_number10"),
                Just("name11"),
                Just("phrase12"),
            ]
        }

        proptest! {
            #[test]
            fn formpush_and_the_sandbox_agree_on_any_value(
                key in rule_key(),
                value in prop_oneof![mixed(), shaped()],
            ) {
                prop_assert_eq!(
                    Rule::of_key(key).check(&value, &[]).is_ok(),
                    formpush_sandbox::subscribe_value_ok(key, &value, None),
                    "{} = {:?}", key, value
                );
            }

            #[test]
            fn truncation_leaves_a_value_within_the_length_limit(key in rule_key(), value in mixed()) {
                let rule = Rule::of_key(key);
                let cut = rule.truncate(&value);
                prop_assert!(value.starts_with(cut.as_ref()));
                if rule.truncatable() {
                    // Whatever still fails after cutting fails for its characters, not its length.
                    if let Err(e) = rule.check(&cut, &[]) {
                        prop_assert!(!e.starts_with("at most"), "{:?} → {:?}: {}", value, cut, e);
                    }
                } else {
                    prop_assert_eq!(cut.as_ref(), value.as_str());
                }
            }
        }
    }
}
