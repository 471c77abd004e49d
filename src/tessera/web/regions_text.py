"""The words of "Save regions for hand editing" and "Re-stitch edited regions" (:mod:`.regions`), in English and
Simplified Chinese, apart from that module so that the message tables can read them without importing Gradio.

:data:`TEXT` holds the page's labels, hints, progress and status words (``{key: (English, Chinese)}``), which
:mod:`.i18n` merges into its own table. The messages a
re-stitch can fail with (its own and the library's manifest checks) are English sentences, like every library
message; :data:`MESSAGES_ZH` gives their Chinese as entries of :data:`.wording_zh.MESSAGES` (``(kind, pattern,
template)``, as ``wording_zh._m`` takes them), in the order they must be tried.
"""
from __future__ import annotations

import re
from collections.abc import Callable

SAVE = '"Save regions for hand editing"'        # the checkbox, as messages quote it
RESTITCH = '"Re-stitch edited regions"'          # the accordion
SAVE_ZH, RESTITCH_ZH = "“保存区域以便手动编辑”", "“重新拼合编辑后的区域”"
HINT = f'{RESTITCH} takes the .zip that {SAVE} made, with the edited region files'  # after an archive's refusal

# key: (English, Simplified Chinese)
TEXT: dict[str, tuple[str, str]] = {
    "regions.save": ("Save regions for hand editing", "保存区域以便手动编辑"),
    "regions.save.info": (
        "also offer each region's input, mask and result as one .zip: edit the result files in any image editor, "
        "then put them back with Re-stitch edited regions",
        "同时把每个区域的输入、蒙版和结果打包成一个 .zip 供下载：可在任意图像编辑器中修改结果文件，"
        "再用“重新拼合编辑后的区域”贴回"),
    "regions.zip": ("Regions for hand editing (.zip)", "供手动编辑的区域（.zip）"),
    "regions.restitch": ("Re-stitch edited regions", "重新拼合编辑后的区域"),
    "regions.restitch.hint": (
        "Upload the .zip of Save regions for hand editing (or its manifest.json and region files) after editing "
        "its region_…_result files; they are pasted into the photo shown now. Only the pixels of each region's "
        "mask change.",
        "在修改其中的 region_…_result 文件后，上传“保存区域以便手动编辑”得到的 .zip（或其中的 manifest.json "
        "与区域文件）；它们会贴回当前显示的照片。只有各区域蒙版内的像素会改变。"),
    "regions.upload": ("Edited regions (.zip, or manifest.json and the region files)",
                       "编辑后的区域（.zip，或 manifest.json 与区域文件）"),
    "regions.run": ("Re-stitch", "重新拼合"),
    "regions.result": ("Re-stitched photo at full resolution (download)", "重新拼合后的全分辨率照片（下载）"),
    "regions.done": ("✓ {size} · re-stitched {count} region(s) from {archive} · {seconds} · {file}",
                     "✓ {size} · 已从 {archive} 重新拼合 {count} 个区域 · {seconds} · {file}"),
    "regions.other_photo": ("note: the Photo is not the one these regions were saved from (nor its inpainted "
                            "result); they were pasted into it all the same",
                            "注意：当前照片既不是保存这些区域时的照片，也不是其修复结果；区域仍已贴回其中"),
    "regions.on_result": ("note: pasted into the inpainted result, so the Mask feather band blends with it, not "
                          "with the original photo (Undo result first to paste into the original)",
                          "注意：区域贴回的是修复结果，因此“蒙版羽化”过渡带与修复结果而非原照片混合"
                          "（如需贴回原照片，请先撤销结果）"),
    "regions.loose": ("the uploaded files", "上传的文件"),
    "regions.progress.read": ("reading the edited regions", "正在读取编辑后的区域"),
    "regions.progress.paste": ("pasting the regions into the photo", "正在把区域贴回照片"),
    "regions.progress.save": ("saving the result", "正在保存结果"),
}


def text(key: str, language: str = "en") -> str:
    """The text of ``key`` in ``language`` ("zh…" picks Simplified Chinese, anything else English)."""
    return TEXT[key][1 if str(language).lower().startswith("zh") else 0]


_MEMBER = r"(?P<which>member|file) (?P<name>'[^']*'|\"[^\"]*\")"
_N = r"[\d,]+"
_KINDS = {"symbolic link": "符号链接", "special file": "特殊文件", "region mask": "区域蒙版",
          "region result": "区域结果", "mask": "蒙版", "result": "结果"}
_WHICH = {"member": "成员", "file": "文件"}
Template = str | Callable[[re.Match[str]], str]

MESSAGES_ZH: tuple[tuple[str, str, Template], ...] = (
    # an archive's refusal: "<archive>: <why> (<HINT>)"; the why is translated by the entries below
    ("regions.hint", r"(?P<why>.+) \(" + re.escape(HINT) + r"\)",
     "{why!t}（" + RESTITCH_ZH + "需要" + SAVE_ZH + "生成的 .zip，其中是编辑后的区域文件）"),
    ("regions.loose", r"the uploaded files: (?P<why>.+)", "上传的文件：{why!t}"),
    ("regions.member", r"member", "成员"),
    ("regions.file", r"file", "文件"),
    ("regions.not_zip", r"not a \.zip archive", "不是 .zip 压缩包"),
    ("regions.damaged", r"a damaged \.zip archive \((?P<why>.*)\)", "损坏的 .zip 压缩包（{why}）"),
    ("regions.unreadable", r"a \.zip archive that cannot be read here \((?P<why>.*)\)",
     "此处无法读取的 .zip 压缩包（{why}）"),
    ("regions.members", r"it has (?P<n>" + _N + r") members, over the limit of (?P<max>" + _N + ")",
     "它有 {n} 个成员，超过上限 {max}"),
    ("regions.files", r"(?P<n>" + _N + r") files are over the limit of (?P<max>" + _N + ")",
     "{n} 个文件，超过上限 {max}"),
    ("regions.directory", r"its list of members takes (?P<n>" + _N + r") bytes, over the limit of (?P<max>" + _N
     + ")", "它的成员列表占 {n} 字节，超过上限 {max}"),
    ("regions.control", _MEMBER + r" has a control character in its name", "{which!t} {name} 的名称含控制字符"),
    ("regions.absolute", _MEMBER + r" has an absolute path", "{which!t} {name} 使用了绝对路径"),
    ("regions.outside", _MEMBER + r" leads out of its folder(?: \(\.\.\))?", "{which!t} {name} 指向其文件夹之外"),
    ("regions.no_name", _MEMBER + r" has no name", "{which!t} {name} 没有名称"),
    ("regions.deep", _MEMBER + r"… is nested too deep or has too long a name", "{which!t} {name}… 嵌套太深或名称太长"),
    ("regions.kind", _MEMBER + r" is a (?P<kind>symbolic link|special file), not a file",
     lambda m: f"{_WHICH[m['which']]} {m['name']} 是{_KINDS[m['kind']]}，不是普通文件"),
    ("regions.encrypted", _MEMBER + r" is encrypted", "{which!t} {name} 已加密"),
    ("regions.bomb", _MEMBER + r" expands (?P<n>" + _N + r") times \(a zip bomb\?\)",
     "{which!t} {name} 解压后膨胀 {n} 倍（压缩炸弹？）"),
    ("regions.liar", _MEMBER + r" holds more bytes than it declares \(a zip bomb\?\)",
     "{which!t} {name} 的实际字节数多于其声明（压缩炸弹？）"),
    ("regions.twice", _MEMBER + r" is in it twice", "{which!t} {name} 重复出现"),
    ("regions.manifests", r"it holds more than one manifest\.json", "其中有不止一个 manifest.json"),
    ("regions.other", _MEMBER + r" is neither an image file nor the manifest\.json",
     "{which!t} {name} 既不是图像文件，也不是 manifest.json"),
    ("regions.not_image", _MEMBER + r" is not an image file \(its content is no PNG, JPEG, WEBP, TIFF or BMP\)",
     "{which!t} {name} 不是图像文件（其内容不是 PNG、JPEG、WEBP、TIFF 或 BMP）"),
    ("regions.empty", _MEMBER + r" is empty", "{which!t} {name} 是空的"),
    ("regions.clash", _MEMBER + r" clashes with another member of the same name", "{which!t} {name} 与另一个同名成员冲突"),
    ("regions.declares", _MEMBER + r" declares (?P<n>" + _N + r") bytes, over the limit of (?P<max>" + _N + ")",
     "{which!t} {name} 声明 {n} 字节，超过上限 {max}"),
    ("regions.total", r"its files (?:declare|hold) over (?P<max>" + _N + r") bytes in all",
     "其中文件合计超过 {max} 字节"),
    ("regions.no_manifest", r"(?:it holds|they hold) no manifest\.json", "其中没有 manifest.json"),
    ("regions.extract", r"cannot be read or extracted \((?P<why>.*)\)", "无法读取或解压（{why}）"),
    ("regions.disk_full", r"the server's disk is full while extracting the edited regions",
     "解压编辑后的区域时服务器磁盘已满"),
    ("regions.disk", r"the edited regions need (?P<need>\d+) MiB on the server's disk, (?P<free>\d+) MiB are free",
     "编辑后的区域需要服务器磁盘上的 {need} MiB，可用只有 {free} MiB"),
    # the re-stitch's own checks
    ("regions.none", r"no edited regions: upload the \.zip of " + re.escape(SAVE) + " first",
     "没有编辑后的区域：请先上传" + SAVE_ZH + "生成的 .zip"),
    ("regions.file_none", r"no edited regions file: upload one first", "没有编辑后的区域文件：请先上传"),
    ("regions.foreign", r"the edited regions file was not uploaded to this server: upload it through the page or "
     r"gradio_client's handle_file", "该编辑后的区域文件不是上传到本服务器的文件：请通过页面上传"
     "（或用 gradio_client 的 handle_file）"),
    ("regions.both", r"upload either the one \.zip of the edited regions or its files, not both",
     "请上传编辑后区域的那一个 .zip，或其中的文件，不要两者都传"),
    ("regions.too_many", r"the manifest lists (?P<n>" + _N + r") regions, over the (?P<max>" + _N + r") that "
     + re.escape(RESTITCH) + " takes", "清单列出 {n} 个区域，超过" + RESTITCH_ZH + "可接受的 {max} 个"),
    ("regions.shared_file", r"the manifest lists (?P<file>.+) for two regions: each region has files of its own",
     "清单为两个区域列出了同一个文件 {file}：每个区域应有自己的文件"),
    ("regions.cover", r"the manifest's regions cover the photo (?P<n>" + _N + r") times, over the (?P<max>\d+) a "
     r"saved set of regions could", "清单中的区域覆盖照片 {n} 次，超过保存的区域可能达到的 {max} 次"),
    ("regions.zip_too_many", r"(?P<n>" + _N + r") regions are over the (?P<max>" + _N + r") that "
     + re.escape(RESTITCH) + r" takes: turn off " + re.escape(SAVE) + r", or inpaint a part of the mask at a time",
     "{n} 个区域超过" + RESTITCH_ZH + "可接受的 {max} 个：请关闭" + SAVE_ZH + "，或每次只修复蒙版的一部分"),
    ("regions.zip_manifest", r"the saved regions have no readable manifest\.json \((?P<why>.*)\)",
     "保存的区域没有可读的 manifest.json（{why}）"),
    # the library's manifest checks (tessera.tasks.inpaint_paste, .manifest_checks) as a re-stitch meets them
    ("manifest.photo_size", r"the photo is (?P<a>\d+x\d+) but manifest (?P<m>.+?) was written for (?P<b>\d+x\d+)",
     "照片为 {a}，但清单 {m} 是为 {b} 的照片写的：请在“照片”中打开保存这些区域时的照片"),
    ("manifest.photo_dtype", r"the photo is (?P<a>\w+) but manifest (?P<m>.+?) was written for (?P<b>\w+)",
     "照片的像素类型为 {a}，但清单 {m} 是为 {b} 写的"),
    ("manifest.file_size", r"region (?P<kind>mask|result) (?P<file>.+?) is (?P<a>\d+x\d+), expected (?P<b>\d+x\d+)",
     lambda m: f"区域{_KINDS[m['kind']]}文件 {m['file']} 为 {m['a']}，应为 {m['b']}（编辑时请勿改变其尺寸）"),
    ("manifest.outside", r"manifest (?P<m>.+?): (?P<kind>region mask|region result) file (?P<name>.+) is not "
     r"inside the manifest's folder", lambda m: f"清单 {m['m']}：{_KINDS[m['kind']]}文件 {m['name']} 不在清单所在的文件夹中"),
    ("manifest.link", r"manifest (?P<m>.+?): (?P<kind>region mask|region result) file (?P<name>.+) leads out of "
     r"the manifest's folder \(a symbolic link\)",
     lambda m: f"清单 {m['m']}：{_KINDS[m['kind']]}文件 {m['name']} 指向清单所在文件夹之外（符号链接）"),
    ("manifest.no_file", r"manifest (?P<m>.+?): an entry lacks its (?P<kind>region mask|region result) file name "
     r"\(got (?P<got>.*)\)", lambda m: f"清单 {m['m']}：有一项缺少{_KINDS[m['kind']]}文件名（收到 {m['got']}）"),
    ("manifest.missing", r"(?P<kind>region mask|region result) file (?P<file>.+?) does not exist",
     lambda m: f"{_KINDS[m['kind']]}文件 {m['file']} 不存在"),
    ("manifest.not_regular", r"(?P<kind>region mask|region result) file (?P<file>.+?) is not a regular file",
     lambda m: f"{_KINDS[m['kind']]}文件 {m['file']} 不是普通文件"),
    ("manifest.not_ours", r"(?P<m>.+?) is not a tessera inpaint manifest \(written by " + re.escape(SAVE) + r"\)",
     "{m} 不是 tessera 的修复清单（应由" + SAVE_ZH + "生成）"),
    ("manifest.version", r"manifest (?P<m>.+?) has version (?P<v>.+); this tessera reads (?P<w>\d+)",
     "清单 {m} 的版本为 {v}；此版本的 tessera 读取版本 {w}"),
    ("manifest.lacks", r"manifest (?P<m>.+?) lacks (?P<key>'\w+')", "清单 {m} 缺少 {key}"),
    ("manifest.crop", r"manifest (?P<m>.+?): crop (?P<crop>\[[^\]]*\]) lies outside the (?P<dims>\d+x\d+) photo",
     "清单 {m}：裁剪框 {crop} 超出 {dims} 的照片"),
    ("manifest.json", r"manifest (?P<m>.+?) is not a readable JSON file: (?P<why>.*)",
     "清单 {m} 不是可读的 JSON 文件：{why}"),
)
