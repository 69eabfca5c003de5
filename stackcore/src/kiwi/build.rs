//! What `stackbuild` needs to know about KIWI: the `kiwi-ng` command line, the stashes'
//! descriptions merged into the stacked root, and a lint for a description built on top of
//! a usr-merged root.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Diag, MergeOptions, description_file, load_description, merge};
use crate::cli::Log;
use crate::image::Image;
use crate::{Error, Result};

/// The kiwi-ng command line, as the original plugin builds it: global `--type` and sorted,
/// de-duplicated `--profile`s before `system`, `extra` (the user's arguments) last. With a
/// `description`, `system build` on top of the root prepared in `TARGET/build/image-root`;
/// without one, `system create` from `image_root`'s own description.
pub fn kiwi_command(
    image_type: Option<&str>,
    profiles: &[String],
    target: &Path,
    image_root: &Path,
    description: Option<&Path>,
    extra: &[String],
) -> Vec<String> {
    let mut c = vec!["kiwi-ng".to_owned()];
    if let Some(t) = image_type {
        c.extend(["--type".to_owned(), t.to_owned()]);
    }
    let mut profiles = profiles.to_vec();
    profiles.sort();
    profiles.dedup();
    for p in profiles {
        c.extend(["--profile".to_owned(), p]);
    }
    let target = target.display().to_string();
    match description {
        Some(d) => c.extend([
            "system".to_owned(),
            "build".to_owned(),
            "--description".to_owned(),
            d.display().to_string(),
            "--target-dir".to_owned(),
            target,
            "--allow-existing-root".to_owned(),
        ]),
        None => c.extend([
            "system".to_owned(),
            "create".to_owned(),
            "--root".to_owned(),
            image_root.display().to_string(),
            "--target-dir".to_owned(),
            target,
        ]),
    }
    c.extend(extra.iter().cloned());
    c
}

/// Merges the images' descriptions (lowest first; an image without `image/config.xml` is
/// skipped, and said so) into the stacked root's `image/config.xml`; with `description`,
/// overlays that directory's description on the result into a copy of the directory at
/// `copy`. Returns what was merged, for the report.
pub fn merge_descriptions(
    images: &[&Image],
    image_root: &Path,
    description: Option<&Path>,
    copy: &Path,
    log: &Log,
) -> Result<Vec<String>> {
    let mut descs = Vec::new();
    let mut names = Vec::new();
    for img in images {
        match img.read_file(b"image/config.xml", 16 << 20)? {
            Some(bytes) => {
                let origin = format!("{}:image/config.xml", img.name);
                descs.push(load_description(&bytes, &origin, None)?);
                names.push(origin);
            }
            None => log.step(format_args!(
                "{} has no image/config.xml: skipped in the merge",
                img.name
            )),
        }
    }
    let opts = MergeOptions::default();
    let mut merged: Option<String> = None;
    if !descs.is_empty() {
        let base = descs.remove(0);
        let out = merge(base, descs, &opts)?;
        report_diags(&out.diags, log);
        let dir = image_root.join("image");
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let file = dir.join("config.xml");
        fs::write(&file, &out.xml).map_err(|e| Error::io(&file, e))?;
        log.step(format_args!(
            "merged {} descriptions into {}/image/config.xml",
            names.len(),
            image_root.display()
        ));
        merged = Some(out.xml);
    }
    if let Some(dir) = description {
        let file = description_file(dir)?;
        copy_dir(dir, copy)?;
        let bytes = fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let overlay = load_description(&bytes, &file.display().to_string(), Some(dir))?;
        let xml = match merged {
            Some(base_xml) => {
                let base =
                    load_description(base_xml.as_bytes(), "the stashes' merged description", None)?;
                let out = merge(base, vec![overlay], &opts)?;
                report_diags(&out.diags, log);
                out.xml
            }
            // No stash brought a description: D alone, as kiwi would read it.
            None => String::from_utf8(bytes)
                .map_err(|e| Error::Usage(format!("{}: {e}", file.display())))?,
        };
        let dest = copy.join(file.file_name().expect("a description file has a name"));
        fs::write(&dest, xml).map_err(|e| Error::io(&dest, e))?;
        names.push(file.display().to_string());
        log.step(format_args!(
            "description {} overlaid into {}",
            dir.display(),
            dest.display()
        ));
    }
    Ok(names)
}

fn report_diags(diags: &[Diag], log: &Log) {
    for d in diags {
        log.warn(d);
    }
}

/// Copies a description directory (files, directories, symlinks; modes kept).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for e in fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let e = e.map_err(|e| Error::io(from, e))?;
        let src = e.path();
        let dst = to.join(e.file_name());
        let ft = e.file_type().map_err(|e| Error::io(&src, e))?;
        if ft.is_dir() {
            copy_dir(&src, &dst)?;
        } else if ft.is_symlink() {
            let link = fs::read_link(&src).map_err(|e| Error::io(&src, e))?;
            std::os::unix::fs::symlink(link, &dst).map_err(|e| Error::io(&dst, e))?;
        } else {
            fs::copy(&src, &dst).map_err(|e| Error::io(&src, e))?;
        }
    }
    Ok(())
}

/// A warning when `description` would install bootstrap packages with apt over a stacked
/// root whose `/bin` or `/lib` is a usr-merge symlink: kiwi unpacks bootstrap packages with
/// `dpkg-deb` straight over the root, which turns those symlinks into directories, and the
/// build then fails in the `usrmerge` package, long after the stack. Bootstrap packages
/// belong in the first build of a root, not in one built on top of it.
///
/// `None` also when the description cannot be found or loaded: that is kiwi's to report.
pub fn bootstrap_over_usr_merge(description: &Path, image_root: &Path) -> Option<String> {
    let merged = ["bin", "lib"].iter().any(|d| {
        fs::symlink_metadata(image_root.join(d)).is_ok_and(|m| m.file_type().is_symlink())
    });
    if !merged {
        return None;
    }
    let file: PathBuf = description_file(description).ok()?;
    let bytes = fs::read(&file).ok()?;
    let desc = load_description(&bytes, &file.display().to_string(), None).ok()?;
    let mut apt = false;
    let mut bootstrap = Vec::new();
    desc.doc.root.walk(&mut |el| match el.name.as_str() {
        "packagemanager" => apt |= matches!(el.text().trim(), "apt" | "apt-get"),
        "packages" if el.attr("type") == Some("bootstrap") => bootstrap.extend(
            el.elements()
                .filter(|p| p.name == "package")
                .filter_map(|p| p.attr("name").map(str::to_owned)),
        ),
        _ => {}
    });
    if !apt || bootstrap.is_empty() {
        return None;
    }
    Some(format!(
        "{}: bootstrap packages ({}) are unpacked by kiwi with dpkg-deb over the stacked \
         root, whose /bin and /lib are usr-merge symlinks: the build is likely to fail in \
         usrmerge; list them under <packages type=\"image\"> instead",
        file.display(),
        bootstrap.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    /// (--type, profiles, description, extra arguments, the command)
    type Case<'a> = (Option<&'a str>, &'a str, Option<&'a str>, &'a str, &'a str);

    #[test]
    fn kiwi_command_puts_type_and_sorted_profiles_first_and_extra_last() {
        let t = Path::new("/t");
        let root = Path::new("/t/build/image-root");
        let cases: &[Case] = &[
            (
                None,
                "",
                None,
                "",
                "kiwi-ng system create --root /t/build/image-root --target-dir /t",
            ),
            (
                Some("oem"),
                "b a b",
                Some("/d"),
                "--signing-key k",
                "kiwi-ng --type oem --profile a --profile b system build --description /d \
                 --target-dir /t --allow-existing-root --signing-key k",
            ),
        ];
        for (ty, profiles, desc, extra, want) in cases {
            let got = kiwi_command(
                *ty,
                &words(profiles),
                t,
                root,
                desc.map(Path::new),
                &words(extra),
            );
            assert_eq!(got, words(want));
        }
    }

    const APT_BOOTSTRAP: &str = r#"<image schemaversion="8.5" name="x"><preferences><packagemanager>apt</packagemanager></preferences><packages type="bootstrap"><package name="usrmerge"/><package name="dpkg"/></packages></image>"#;

    #[test]
    fn bootstrap_lint_fires_only_for_apt_bootstrap_over_a_usr_merged_root() -> Result<()> {
        let d = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let desc = d.path().join("desc");
        let root = d.path().join("root");
        fs::create_dir_all(&desc).map_err(|e| Error::io(&desc, e))?;
        fs::create_dir_all(root.join("usr/bin")).map_err(|e| Error::io(&root, e))?;
        fs::write(desc.join("config.xml"), APT_BOOTSTRAP).map_err(|e| Error::io(&desc, e))?;
        // /bin a directory: nothing to say
        fs::create_dir(root.join("bin")).map_err(|e| Error::io(&root, e))?;
        assert_eq!(bootstrap_over_usr_merge(&desc, &root), None);
        fs::remove_dir(root.join("bin")).map_err(|e| Error::io(&root, e))?;
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).map_err(|e| Error::io(&root, e))?;
        let w = bootstrap_over_usr_merge(&desc, &root).expect("a warning");
        assert!(w.contains("bootstrap packages (usrmerge, dpkg)"), "{w}");
        // zypper, not apt: kiwi does not unpack with dpkg-deb
        fs::write(
            desc.join("config.xml"),
            APT_BOOTSTRAP.replace(">apt<", ">zypper<"),
        )
        .map_err(|e| Error::io(&desc, e))?;
        assert_eq!(bootstrap_over_usr_merge(&desc, &root), None);
        Ok(())
    }
}
