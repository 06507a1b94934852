//! Every service, rpc, message, field, oneof, enum and enum value of the `.proto`
//! files carries a leading comment: the `.proto` files are the API's documentation
//! (issue 9), and the comments become the generated code's docs and what gRPC
//! reflection shows.

use prost_types::source_code_info::Location;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

// Field numbers in descriptor.proto, which make up the paths of source locations.
/// `FileDescriptorProto.message_type`.
const FILE_MESSAGE: i32 = 4;
/// `FileDescriptorProto.enum_type`.
const FILE_ENUM: i32 = 5;
/// `FileDescriptorProto.service`.
const FILE_SERVICE: i32 = 6;
/// `DescriptorProto.field`.
const MESSAGE_FIELD: i32 = 2;
/// `DescriptorProto.nested_type`.
const MESSAGE_NESTED: i32 = 3;
/// `DescriptorProto.enum_type`.
const MESSAGE_ENUM: i32 = 4;
/// `DescriptorProto.oneof_decl`.
const MESSAGE_ONEOF: i32 = 8;
/// `EnumDescriptorProto.value`.
const ENUM_VALUE: i32 = 2;
/// `ServiceDescriptorProto.method`.
const SERVICE_METHOD: i32 = 2;

/// The directory the `.proto` files are imported from.
fn proto_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto")
}

/// Every `.proto` file under `root`, as import paths relative to it, sorted.
fn proto_files(root: &Path) -> Vec<String> {
    fn walk(directory: &Path, found: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(directory)
            .unwrap_or_else(|error| panic!("cannot list {}: {error}", directory.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, found);
            } else if path
                .extension()
                .is_some_and(|extension| extension == "proto")
            {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(root, &mut found);
    let mut files: Vec<String> = found
        .iter()
        .map(|path| {
            let relative = path.strip_prefix(root).expect("found under the root");
            relative
                .components()
                .map(|component| component.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    files.sort();
    files
}

/// One element of a `.proto` file that needs a comment.
struct Element {
    /// What it is: "message", "field", "rpc", ...
    kind: &'static str,
    /// Its full name, e.g. `conclave.client.v1.Session.user_id`.
    name: String,
    /// Its source location path (see `SourceCodeInfo.Location.path`).
    path: Vec<i32>,
}

/// Lists the elements of one file, each with its location path.
fn elements(file: &FileDescriptorProto) -> Vec<Element> {
    let mut elements = Vec::new();
    let package = file.package();
    for (index, service) in file.service.iter().enumerate() {
        let path = vec![FILE_SERVICE, index as i32];
        let name = format!("{package}.{}", service.name());
        for (method_index, method) in service.method.iter().enumerate() {
            elements.push(Element {
                kind: "rpc",
                name: format!("{name}.{}", method.name()),
                path: child(&path, SERVICE_METHOD, method_index),
            });
        }
        elements.push(Element {
            kind: "service",
            name,
            path,
        });
    }
    for (index, message) in file.message_type.iter().enumerate() {
        message_elements(
            package,
            message,
            vec![FILE_MESSAGE, index as i32],
            &mut elements,
        );
    }
    for (index, enumeration) in file.enum_type.iter().enumerate() {
        enum_elements(
            package,
            enumeration,
            vec![FILE_ENUM, index as i32],
            &mut elements,
        );
    }
    elements
}

fn child(parent: &[i32], field: i32, index: usize) -> Vec<i32> {
    let mut path = parent.to_vec();
    path.extend([field, index as i32]);
    path
}

fn message_elements(
    scope: &str,
    message: &DescriptorProto,
    path: Vec<i32>,
    elements: &mut Vec<Element>,
) {
    let name = format!("{scope}.{}", message.name());
    for (index, field) in message.field.iter().enumerate() {
        elements.push(Element {
            kind: "field",
            name: format!("{name}.{}", field.name()),
            path: child(&path, MESSAGE_FIELD, index),
        });
    }
    for (index, oneof) in message.oneof_decl.iter().enumerate() {
        // proto3 `optional` fields are compiled into synthetic oneofs named after
        // the field with a leading underscore; they have no source of their own.
        let is_synthetic = message
            .field
            .iter()
            .any(|field| field.proto3_optional() && field.oneof_index == Some(index as i32));
        if !is_synthetic {
            elements.push(Element {
                kind: "oneof",
                name: format!("{name}.{}", oneof.name()),
                path: child(&path, MESSAGE_ONEOF, index),
            });
        }
    }
    for (index, nested) in message.nested_type.iter().enumerate() {
        // Map entries are generated, not written.
        if !nested
            .options
            .as_ref()
            .is_some_and(|options| options.map_entry())
        {
            message_elements(&name, nested, child(&path, MESSAGE_NESTED, index), elements);
        }
    }
    for (index, enumeration) in message.enum_type.iter().enumerate() {
        enum_elements(
            &name,
            enumeration,
            child(&path, MESSAGE_ENUM, index),
            elements,
        );
    }
    elements.push(Element {
        kind: "message",
        name,
        path,
    });
}

fn enum_elements(
    scope: &str,
    enumeration: &EnumDescriptorProto,
    path: Vec<i32>,
    elements: &mut Vec<Element>,
) {
    let name = format!("{scope}.{}", enumeration.name());
    for (index, value) in enumeration.value.iter().enumerate() {
        elements.push(Element {
            kind: "enum value",
            // Enum values are scoped like siblings of their enum in protobuf, but
            // naming the enum reads better here.
            name: format!("{name}.{}", value.name()),
            path: child(&path, ENUM_VALUE, index),
        });
    }
    elements.push(Element {
        kind: "enum",
        name,
        path,
    });
}

/// The elements of `files` (import paths under `root`) that have no leading
/// comment, one line each: what, which, where.
fn undocumented(root: &Path, files: &[String]) -> Vec<String> {
    let descriptors = protox::Compiler::new([root])
        .expect("the include path is usable")
        .include_source_info(true)
        .open_files(files)
        .unwrap_or_else(|error| panic!("the .proto files do not compile: {error}"))
        .file_descriptor_set();
    let mut missing = Vec::new();
    for file in &descriptors.file {
        let mut missing_here = Vec::new();
        let locations: HashMap<&[i32], &Location> = file
            .source_code_info
            .as_ref()
            .map(|info| {
                info.location
                    .iter()
                    .map(|location| (location.path.as_slice(), location))
                    .collect()
            })
            .unwrap_or_default();
        for element in elements(file) {
            let location = locations.get(element.path.as_slice());
            let documented = location.is_some_and(|location| {
                location
                    .leading_comments
                    .as_deref()
                    .is_some_and(|comment| !comment.trim().is_empty())
            });
            if !documented {
                let line = location
                    .and_then(|location| location.span.first())
                    .map_or(0, |line| line + 1);
                missing_here.push((
                    line,
                    format!(
                        "{}:{line}: {} {} has no leading comment",
                        file.name(),
                        element.kind,
                        element.name
                    ),
                ));
            }
        }
        // In the order of the file, whatever the order of the walk.
        missing_here.sort();
        missing.extend(missing_here.into_iter().map(|(_, line)| line));
    }
    missing
}

#[test]
fn every_element_of_every_proto_file_has_a_leading_comment() {
    let root = proto_root();
    let files = proto_files(&root);
    assert!(
        !files.is_empty(),
        "no .proto files under {}",
        root.display()
    );
    let missing = undocumented(&root, &files);
    assert!(
        missing.is_empty(),
        "undocumented elements of the .proto files: {} (a comment on the line(s) \
         directly above each, with no blank line between, says what it is for):\n{}",
        missing.len(),
        missing.join("\n")
    );
}

/// The check itself: it must find an element without a comment, and must not
/// count a trailing or detached comment as documentation.
#[test]
fn an_undocumented_element_is_named() {
    let root =
        std::env::temp_dir().join(format!("conclave-proto-documented-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("a temporary directory");
    let source = [
        "// The file.",
        "syntax = \"proto3\";",
        "package check.v1;",
        "",
        "// Documented.",
        "service Things {",
        "  rpc Get(Thing) returns (Thing);",
        "}",
        "",
        "// Documented.",
        "message Thing {",
        "  // Documented.",
        "  string name = 1;",
        "  uint32 count = 2; // trailing only",
        "  // Detached, not leading.",
        "",
        "  optional bytes data = 3;",
        "  // Documented.",
        "  oneof choice {",
        "    // Documented.",
        "    string a = 4;",
        "    string b = 5;",
        "  }",
        "}",
        "",
        "enum Kind {",
        "  // Documented.",
        "  KIND_UNSPECIFIED = 0;",
        "  KIND_OTHER = 1;",
        "}",
    ]
    .join("\n");
    std::fs::write(root.join("check.proto"), source).expect("the file is written");
    let missing = undocumented(&root, &["check.proto".to_owned()]);
    std::fs::remove_dir_all(&root).expect("the temporary directory is removed");
    assert_eq!(
        missing,
        [
            "check.proto:7: rpc check.v1.Things.Get has no leading comment",
            "check.proto:14: field check.v1.Thing.count has no leading comment",
            "check.proto:17: field check.v1.Thing.data has no leading comment",
            "check.proto:22: field check.v1.Thing.b has no leading comment",
            "check.proto:26: enum check.v1.Kind has no leading comment",
            "check.proto:29: enum value check.v1.Kind.KIND_OTHER has no leading comment",
        ]
    );
}
