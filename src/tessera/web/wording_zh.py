"""Server messages in Simplified Chinese, whole: the table :data:`MESSAGES` and :func:`translate` over it.

:func:`.wording.for_page` hands a message here for a page in Chinese, after the CLI's flags became the labels of
the page's controls. Each kind of message the web UI can show has one entry: a regular expression over the whole
English message, with named groups for numbers, sizes, file names, and a Chinese template (a group may be
translated in turn). A message made of parts ("A · B · C", "A; B") is translated part by part; one with no
entry gets :data:`LEAD_IN` and its own words. A message already in Chinese (a module's own table) is left as it is.
"""
from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass

from .regions_text import MESSAGES_ZH as REGIONS_ZH
from .wording import control_label

LEAD_IN = "原文："  # before the words of a message the table has no entry for


@dataclass(frozen=True)
class Message:
    """One kind of message: ``pattern`` matches the whole (English) message, ``template`` is its Chinese.

    ``template`` is a :meth:`str.format` string over the pattern's named groups (``{name!t}``: the group
    translated in turn), or a function of the match for the few that need more than that.
    """

    kind: str
    pattern: re.Pattern[str]
    template: str | Callable[[re.Match[str]], str]

    def render(self, match: re.Match[str]) -> str:
        if callable(self.template):
            return self.template(match)
        groups = {name: value or "" for name, value in match.groupdict().items()}
        return _FORMATTER.format(self.template, **groups)


class _Formatter(string.Formatter):
    def convert_field(self, value: object, conversion: str | None) -> object:
        if conversion == "t":
            return translate(str(value)) if value else ""
        return super().convert_field(value, conversion)


_FORMATTER = _Formatter()

_NUM = r"-?[\d,]+(?:\.\d+)?"
_SIZE = r"[\d.]+ (?:B|KiB|MiB|GiB|TiB)"
_DIMS = r"\d+x\d+"
_LABEL = r"“[^”]+”"


def _m(kind: str, pattern: str, template: str | Callable[[re.Match[str]], str]) -> Message:
    return Message(kind, re.compile(pattern), template)


def _duration(match: re.Match[str]) -> str:
    """``12 s``, ``3 min 05 s``, ``1 h 02 min`` (see :func:`.job_progress._duration`) in Chinese."""
    return match.group("value").replace(" min", " 分").replace(" h", " 小时").replace(" s", " 秒")


_RANGES = (("greater than or equal to ", "≥ "), ("less than or equal to ", "≤ "), ("greater than ", "> "),
           ("less than ", "< "))


def _choices(words: str) -> str:
    """The middle of pydantic's "Input should be ...": ranges as signs, alternatives joined by "或"."""
    for english, sign in _RANGES:
        words = words.replace(english, sign)
    parts = [piece.strip() for piece in re.split(r",? or |, ", words) if piece.strip()]
    return " 或 ".join(_PYDANTIC_WORDS.get(piece, piece) for piece in parts)  # a quoted choice stays a value


_PYDANTIC_WORDS = {
    "a valid integer": "整数", "a valid number": "数字", "a valid boolean": "是/否", "a valid string": "文本",
}
_PYDANTIC_REASONS = {
    "unable to parse string as an integer": "无法读作整数", "unable to parse string as a number": "无法读作数字",
    "got a number with a fractional part": "不能带小数", "unable to interpret input": "无法识别",
}


def _should_be(match: re.Match[str]) -> str:
    head = match.group("words")
    reason = match.group("reason")
    # "'auto' or a valid integer, unable to parse..." has its reason after the last comma; a choice list does not
    said = f"应为 {_choices(head)}"
    if reason:
        said += f"（{_PYDANTIC_REASONS.get(reason, reason)}）"
    return said


_PHASES = {  # the job's phases (progress lines, see .jobs) and the engine's stages
    "loading photo": "正在读取照片", "loading the photo": "正在读取照片", "reading photo": "正在读取照片",
    "reading the photo": "正在读取照片", "loading mask": "正在读取蒙版", "loading the mask": "正在读取蒙版",
    "reading mask": "正在读取蒙版", "reading the mask": "正在读取蒙版",
    "loading model": "正在加载模型", "loading the model": "正在加载模型",
    "detecting faces": "正在检测人脸", "restoring faces": "正在修复人脸", "upscaling background": "正在放大背景",
    "upscaling the background": "正在放大背景", "pasting faces": "正在贴回人脸",
    "merging": "正在合并", "merging tiles": "正在合并分块", "stitching": "正在拼接",
    "saving result": "正在保存结果", "saving the result": "正在保存结果", "writing result": "正在写入结果",
    "writing the result": "正在写入结果", "encoding": "正在编码", "saving": "正在保存", "writing": "正在写入",
    "preparing": "正在准备", "preparing mask": "正在准备蒙版", "preparing the mask": "正在准备蒙版",
    "planning regions": "正在规划区域", "starting": "正在开始", "finishing": "正在收尾", "done": "完成",
    "waiting for the device": "正在等待设备", "queued": "排队中", "cancelling": "正在取消",
    "stopped": "已停止", "resizing": "正在缩放", "deblurring": "正在去模糊", "finish": "正在收尾",
    "finishing the result": "正在收尾", "making previews": "正在生成预览", "views": "正在生成预览",
}
UNITS = {"tile": "分块", "region": "区域", "face": "人脸", "pass": "轮", "tiles": "分块", "regions": "区域",
          "faces": "人脸", "passes": "轮", "batch": "批", "piece": "片", "frame": "帧", "step": "步",
          "rows": "行", "row": "行", "band": "条带", "block": "块", "blocks": "块", "save": "保存",
          "load": "读取", "merge": "合并", "detect": "检测",
          "parsing": "人脸解析", "steps": "步", "read": "读取", "work": "处理", "views": "预览", "preview": "预览", "finish": "收尾",
          "previews": "预览"}


def _phase(match: re.Match[str]) -> str:
    said = _PHASES[match.group("words").lower()]
    rest = match.group("rest")
    return said + (f" {translate(rest)}" if rest else "")


_PHASE_WORDS = "|".join(re.escape(words) for words in sorted(_PHASES, key=len, reverse=True))


def _counter(match: re.Match[str]) -> str:
    return f"{UNITS[match.group('unit')]} {match.group('count')}"


# One entry per kind of message; the order matters only where two could match (the more specific first).
MESSAGES: tuple[Message, ...] = (
    # -- progress lines (.job_progress) and the job's phases
    _m("progress.count", r"(?P<unit>" + "|".join(UNITS) + r") (?P<count>\d+(?:/\d+)?(?: \([\d.]+ ?%\))?)",
       _counter),
    _m("progress.unit", r"(?P<unit>" + "|".join(UNITS) + ")", lambda m: UNITS[m["unit"]]),
    _m("progress.eta", r"ETA (?P<value>.+)", lambda match: f"预计剩余 {_duration(match)}"),
    _m("progress.memory", r"memory (?P<share>\d+%)(?P<high> ⚠ over 90%)?",
       lambda match: f"内存 {match['share']}" + (" ⚠ 超过 90%" if match["high"] else "")),
    _m("progress.pass_factor", r"pass (?P<n>\d+/\d+): x(?P<factor>[\d.]+)", "第 {n} 轮：×{factor}"),
    _m("progress.written", r"(?P<size>" + _SIZE + r") written", "已写入 {size}"),
    _m("progress.job_memory", r"job memory (?P<size>" + _SIZE + ")", "任务内存 {size}"),
    _m("progress.machine_memory", r"⚠ machine memory (?P<share>\d+%) in use", "⚠ 本机内存已用 {share}"),
    _m("progress.gpu_memory", r"GPU (?P<device>\S+) (?P<used>[\d.]+ / [\d.]+ GiB)(?P<high> ⚠ over 90%)?",
       lambda m: f"GPU {m['device']} {m['used']}" + ("（⚠ 超过 90%）" if m["high"] else "")),
    _m("progress.times", r"(?P<total>[\d.]+) s \((?P<parts>(?:\w+ [\d.]+ s(?:, )?)+)\)",
       lambda m: f"{m['total']} 秒（" + "，".join(
           f"{UNITS.get(word, word)} {value} 秒" for word, value in re.findall(r"(\w+) ([\d.]+) s", m["parts"]))
       + "）"),
    _m("value.size", r"(?P<size>" + _SIZE + ")", "{size}"),
    _m("progress.elapsed", r"(?P<value>\d+(?:\.\d+)? (?:s|min|h)(?: \d+ (?:s|min))?)", _duration),
    _m("progress.elapsed_of", r"(?P<what>save|load|detect|merge|read|work) (?P<value>\d+(?:\.\d+)? s)",
       lambda match: f"{UNITS[match['what']]} {_duration(match)}"),
    # -- status lines (.handlers: _finish and the tasks' status)
    _m("status.weight_free", r"(?P<model>\S+) \(weight-free\)", "{model}（无权重方法）"),
    _m("status.faces", r"(?P<count>\d+) face\(s\)", "{count} 张人脸"),
    _m("status.regions", r"(?P<count>\d+) region\(s\)(?:, (?P<scaled>\d+) downscaled)?(?:, (?P<pieces>\d+) pieces "
       r"of thin holes)? with (?P<model>\S+) \((?P<strategy>\w+)\) on (?P<device>\S+) (?P<precision>\w+)",
       lambda m: (f"{m['count']} 个区域" + (f"（{m['scaled']} 个缩小处理）" if m["scaled"] else "")
                  + (f"（{m['pieces']} 处细长空洞分片）" if m["pieces"] else "")
                  + f"，模型 {m['model']}（{_STRATEGIES.get(m['strategy'], m['strategy'])}），"
                  f"{m['device']} {m['precision']}")),
    _m("status.coverage", r"mask covers (?P<share>[\d.]+%)", "蒙版覆盖 {share}"),
    _m("status.lama_fallback", r"LaMa weights are not in the cache(?: \([^)]*\))?: used the weight-free "
       r"(?P<method>\S+) method(?: \((?P<why>[^)]*)\))?; for LaMa run `(?P<command>[^`]+)`",
       lambda m: (f"缓存中没有 LaMa 权重：已改用无权重方法 {m['method']}"
                  + ("（未安装 patchmatch-cython，它能更好地保留纹理）" if m["why"] else "")
                  + "；如需 LaMa，请服务器管理员下载其权重")),
    # -- Cancel's answers (.handlers.WebApp.cancel) and the job's end (.jobs.user_errors)
    _m("cancel.asked", r"cancelling (?P<count>\d+) job\(s\): stops at the next batch",
       "正在取消 {count} 个任务：将在下一批处理时停止"),
    _m("cancel.stopping", r"cancelling (?P<count>\d+) job\(s\): still stopping(?:…|\.\.\.)?",
       "正在取消 {count} 个任务：仍在停止中…"),
    _m("cancel.too_late", r"cancelling (?P<count>\d+) job\(s\): finished before it could stop, the result was saved",
       "正在取消 {count} 个任务：任务在停止前已完成，结果已保存"),
    _m("cancel.nothing_saved", r"cancelling (?P<count>\d+) job\(s\): stopped, nothing was saved",
       "已取消 {count} 个任务：已停止，未保存任何文件"),
    _m("cancel.asked_now", r"cancelling (?P<count>\d+) job\(s\): (?P<rest>.*)", "正在取消 {count} 个任务：{rest!t}"),
    _m("cancel.none", r"no running job", "没有正在运行的任务"),
    _m("cancel.stopped", r"stopped", "已停止"),
    _m("cancel.done", r"Cancelled: the job was stopped before it finished", "已取消：任务在完成前被停止"),
    _m("cancel.cancelled", r"[Cc]ancelled", "已取消"),
    _m("error.oom", r"out of memory: lower (?P<a>“[^”]+”|\"[^\"]+\") or (?P<b>“[^”]+”|\"[^\"]+\") in Advanced "
       r"settings, or use a smaller photo", "内存不足：请在“高级设置”中调低 {a} 或 {b}，或使用更小的照片"),
    _m("error.oom_run", r"out of memory running (?P<model>\S+) on one (?P<dims>\d+x\d+) input on (?P<device>\S+) "
       r"\(budget (?P<budget>" + _SIZE + r")\)", "运行 {model} 时内存不足：{device} 上单个 {dims} 输入（预算 {budget}）"),
    _m("error.oom_tile", r"out of memory running (?P<model>\S+) on (?P<device>\S+) even with a (?P<tile>\d+)px tile "
       r"and batch 1 \(budget (?P<budget>" + _SIZE + r")\)",
       "运行 {model} 时内存不足：{device} 上即使用 {tile} 像素分块、每批 1 个也放不下（预算 {budget}）"),
    _m("error.free_memory", r"free memory or lower (?P<label>" + _LABEL + r")", "请释放内存或调低 {label}"),
    _m("error.budget_small", r"memory budget (?P<budget>" + _SIZE + r") is too small for (?P<model>\S+): a "
       r"(?P<tile>\d+)px tile with (?P<pad>\d+)px context needs (?P<need>" + _SIZE + ")",
       "内存预算 {budget} 对 {model} 太小：{tile} 像素分块加 {pad} 像素上下文需要 {need}"),
    _m("error.internal", r"internal error \((?P<type>\w+)\): (?P<detail>.*)", "内部错误（{type}）：{detail!t}"),
    # -- the page's own checks (.limits, .uploads, .models, .handlers, .editor)
    _m("upload.none", r"no (?P<what>photo|mask): upload one first",
       lambda m: f"没有{_WHAT[m['what']]}：请先上传"),
    _m("upload.gone", r"the upload is gone \(the page was open too long\?\): upload it again",
       "上传的文件已不在服务器上（页面打开太久？）：请重新上传"),
    _m("upload.too_big", r"(?P<size>" + _SIZE + r") is over the upload limit of (?P<limit>" + _SIZE + ")",
       "{size} 超过上传上限 {limit}"),
    _m("upload.empty", r"the file is empty", "文件是空的"),
    _m("upload.foreign", r"the (?P<what>photo|mask) was not uploaded to this server: upload it through the page or "
       r"gradio_client's handle_file", lambda m: f"该{_WHAT[m['what']]}不是上传到本服务器的文件：请通过页面上传"
       "（或用 gradio_client 的 handle_file）"),
    _m("upload.foreign_editor", r"not uploaded to this server", "不是上传到本服务器的文件"),
    _m("limits.scale", r"(?:scale|(?P<label>" + _LABEL + r")) must be above 0 and at most (?P<max>" + _NUM
       + r") in the web UI, got (?P<got>" + _NUM + ")",
       lambda m: f"{m['label'] or '“放大倍数”'}必须大于 0 且不超过 {m['max']}（网页界面的限制），收到 {m['got']}"),
    _m("limits.number", r"(?:scale|(?P<label>" + _LABEL + r")) must be a number or auto, got (?P<got>.*)",
       lambda m: f"{m['label'] or '“放大倍数”'}必须是数字或 auto，收到 {m['got']}"),
    _m("limits.quality", r"(?:quality|(?P<label>" + _LABEL + r")) must be an integer from (?P<low>\d+) to "
       r"(?P<high>\d+), got (?P<got>.*)",
       lambda m: f"{m['label'] or '“质量（JPEG、WEBP）”'}必须是 {m['low']} 到 {m['high']} 的整数，收到 {m['got']}"),
    _m("limits.result", r"the result would be (?P<dims>" + _DIMS + r") pixels \((?P<need>" + _SIZE + r")\); only "
       r"(?P<free>" + _SIZE + r") of memory is available: choose a smaller (?:scale|(?P<label>" + _LABEL + "))",
       lambda m: f"结果将是 {m['dims']} 像素（{m['need']}）；可用内存只有 {m['free']}：请选择更小的"
       f"{m['label'] or '“放大倍数”'}"),
    _m("limits.job_result", r"(?P<what>an x[\d.]+ result of this " + _DIMS + r" photo is " + _DIMS + r" pixels|the result "
       r"is " + _DIMS + r" pixels): (?P<rest>.+)", "{what!t}：{rest!t}"),
    _m("limits.scaled_size", r"an x(?P<scale>[\d.]+) result of this (?P<dims>" + _DIMS + r") photo is (?P<out>" + _DIMS
       + r") pixels", "这张 {dims} 的照片放大 ×{scale} 后为 {out} 像素"),
    _m("limits.result_size", r"the result is (?P<out>" + _DIMS + r") pixels", "结果为 {out} 像素"),
    _m("limits.job_memory", r"the job needs about (?P<need>" + _SIZE + r") of memory \(the photo, the result and the "
       r"encoder's buffers\), over the (?P<budget>" + _SIZE + r") one job may take of the (?P<free>" + _SIZE
       + r") available now", "任务约需 {need} 内存（照片、结果和编码缓冲），超过单个任务可用的 {budget}（当前可用 {free}）"),
    _m("limits.smaller_control", r"choose a smaller (?P<label>" + _LABEL + r") \(at most (?P<n>" + _NUM + r")\)",
       "请选择更小的{label}（最多 {n}）"),
    _m("limits.smaller_photo", r"use a smaller photo", "请使用更小的照片"),
    _m("limits.photo_pixels", r"the photo has (?P<dims>" + _DIMS + r") = (?P<n>" + _NUM + r") pixels, over this "
       r"server's limit of (?P<limit>" + _NUM + r") pixels",
       "照片有 {dims} = {n} 像素，超过本服务器上限 {limit} 像素"),
    _m("viewer.malformed", r"the page sent a malformed (?:painting|stroke): reload the page",
       "页面发送的涂抹数据有误：请刷新页面"),
    _m("viewer.impossible", r"the page sent a stroke with an impossible size or position: reload the page",
       "页面发送的笔画尺寸或位置无效：请刷新页面"),
    _m("viewer.strokes", r"too many strokes \((?P<n>" + _NUM + r"), at most (?P<limit>" + _NUM + r")\): upload a "
       r"mask instead", "笔画过多（{n}，上限 {limit}）：请改为上传蒙版"),
    _m("viewer.points", r"the painting has over (?P<limit>" + _NUM + r") points: upload a mask instead",
       "涂抹的点数超过 {limit}：请改为上传蒙版"),
    _m("viewer.work", r"the painting is too large to draw \(wide brushes across the whole photo\): upload a mask "
       r"instead, or paint with fewer strokes", "涂抹范围过大，无法绘制（宽笔刷横跨整张照片）：请改为上传蒙版，或减少笔画"),
    _m("viewer.gone", r"the photo's preview is gone \(the page was open too long\?\): upload the photo again",
       "照片的预览已不存在（页面打开太久？）：请重新上传照片"),
    _m("viewer.tile", r"could not (?:encode a preview tile|write the mask overlay)", "无法生成预览图块"),
    _m("model.unknown", r"unknown model (?P<name>.+): choose one from the list", "未知模型 {name}：请从列表中选择"),
    _m("model.lama_fallback", r"LaMa's weights are not on this server: the weight-free method ran instead; "
       r"whoever runs the server can fetch them with `(?P<command>[^`]+)`",
       "本服务器没有 LaMa 权重：已改用无权重方法；服务器管理员可以下载它"),
    _m("model.gone", r"model (?P<name>'[^']*') is no longer available on this server", "模型 {name} 已不在本服务器上"),
    _m("model.missing", r"model (?P<name>'[^']*') is not downloaded on this server: whoever runs it can fetch it "
       r"with `(?P<command>[^`]+)`", "本服务器尚未下载模型 {name}：请服务器管理员下载它"),
    _m("model.wrong_task", r"model (?P<name>\S+) is a (?P<task>\w+) model, not (?:an upscaler|a face model|an "
       r"inpainting one)(?: \(try (?P<try>[^)]*)\))?",
       lambda m: (f"模型 {m['name']} 是{_TASKS.get(m['task'], m['task'])}模型，不适用于此任务"
                  + (f"（可试 {m['try'].replace(' or ', '、')}）" if m["try"] else ""))),
    _m("model.precision", r"model (?P<name>\S+) does not support (?P<precision>\w+) \(supports (?P<list>[^)]*)\)",
       "模型 {name} 不支持 {precision}（支持 {list}）"),
    _m("model.channels", r"model (?P<name>\S+) takes (?P<n>\d+) channels, the image has (?P<m>\d+)",
       "模型 {name} 需要 {n} 个通道，图像有 {m} 个"),
    # -- a model file of the server that cannot be used (tessera.models): the server's to mend, the file named only
    _m("model.checksum", r"(?P<path>\S+) (?:was not pulled and no checksum is published for .*|has \w+ \w+ but the .*)",
       lambda m: f"服务器上的模型文件 {_base(m['path'])} 未通过校验，未加载：请联系服务器管理员"),
    _m("model.not_cached", r"model (?P<name>'[^']*') is not in the cache .*",
       "本服务器的缓存中没有模型 {name}：请服务器管理员下载它"),
    _m("model.unknown_name", r"unknown model (?P<name>'[^']*')", "未知模型 {name}"),
    _m("model.not_found", r"model file not found: (?P<path>.+)", lambda m: f"找不到模型文件 {_base(m['path'])}"),
    _m("model.not_state_dict", r"holds an? (?P<type>\w+), not a state dict of weights", "其中不是模型权重"),
    _m("model.no_tensors", r"contains no weight tensors", "不含任何权重张量"),
    _m("model.unreadable", r"cannot read weights: (?P<why>.*)", "无法读取权重（详情见服务器日志）"),
    _m("model.file_type", r"unsupported weight file type (?P<suffix>'[^']*') \(expected one of (?P<list>[^)]*)\)",
       "不支持的权重文件类型 {suffix}（支持 {list}）"),
    _m("model.too_big", r"holds (?P<size>" + _SIZE + r") of weights, over the (?P<budget>" + _SIZE + r") budget.*",
       "权重有 {size}，超过预算 {budget}：请联系服务器管理员"),
    # -- the photo and the mask (tessera.image, tessera.masks)
    _m("image.too_large", r"(?P<dims>" + _DIMS + r") = (?P<n>" + _NUM + r") pixels is over the limit of (?P<limit>"
       + _NUM + r") pixels(?: \((?P<hint>[^)]*)\))?",
       lambda m: f"{m['dims']} = {m['n']} 像素，超过上限 {m['limit']} 像素" + (f"（{translate(m['hint'])}）"
                                                                      if m["hint"] else "")),
    _m("image.too_large_now", r"(?P<dims>" + _DIMS + r") = (?P<n>" + _NUM + r") pixels take (?P<dec>" + _SIZE
       + r") decoded and up to (?P<peak>" + _SIZE + r") while decoding, more than (?P<share>\d+%) of the "
       r"(?P<free>" + _SIZE + r") of memory available: the limit is (?P<limit>" + _NUM + r") pixels now"
       r"(?: \((?P<hint>[^)]*)\))?",
       lambda m: (f"{m['dims']} = {m['n']} 像素解码后占 {m['dec']}，解码时最多 {m['peak']}，超过可用内存 "
                  f"{m['free']} 的 {m['share']}：当前上限为 {m['limit']} 像素"
                  + (f"（{translate(m['hint'])}）" if m["hint"] else ""))),
    _m("image.pillow_limit", r"too large for Pillow's reader \((?P<detail>.*)\)", "图像太大，Pillow 无法读取"),
    _m("image.not_image", r"not an image tessera reads \((?P<what>[^;]*); it reads (?P<formats>[^)]*)\)",
       lambda m: ("不是 tessera 能读取的图像（" + ("未知或不支持的格式" if m["what"].startswith("unknown")
                                              else m["what"].replace(" is not read", " 格式不受支持"))
                  + f"；支持 {m['formats']}）")),
    _m("image.empty", r"not an image \(empty file\)", "不是图像（空文件）"),
    _m("image.corrupt", r"truncated or corrupt image data(?: \((?P<detail>.*)\))?",
       "图像数据被截断或已损坏"),
    _m("image.truncated", r"truncated image data \(file ends inside the pixels\)", "图像数据被截断（文件在像素数据中途结束）"),
    _m("image.header", r"corrupt header \(size (?P<dims>-?\d+x-?\d+)\)", "文件头已损坏（尺寸 {dims}）"),
    _m("image.mode", r"unsupported (?:image mode|sample type|TIFF layout|TIFF palette)(?P<detail>.*)",
       "不支持的图像模式{detail}"),
    _m("image.no_file", r"no such file", "文件不存在"),
    _m("image.folder", r"is a folder, not an image file", "是文件夹，不是图像文件"),
    _m("image.permission", r"permission denied", "没有权限"),
    _m("image.cannot_open", r"cannot open \((?P<detail>.*)\)", "无法打开（{detail}）"),
    _m("mask.size", r"(?P<what>mask(?: \S+)?) is (?P<mask>" + _DIMS + r") but the photo is (?P<photo>" + _DIMS
       + r")(?: \((?P<hint>[^)]*)\))?",
       lambda m: f"蒙版为 {m['mask']}，但照片为 {m['photo']}" + (f"（{translate(m['hint'])}）" if m["hint"] else "")),
    _m("mask.empty", r"(?P<what>mask(?: \S+)?) is empty: no pixel above (?P<level>\d+)(?: scale)?, nothing to "
       r"inpaint", "蒙版是空的：没有高于 {level} 的像素，没有需要修复的内容"),
    _m("mask.context", r"(?P<what>mask(?: \S+)?)(?:, grown by (?P<grow>\d+) px,)? leaves (?:no pixel|only "
       r"(?P<left>[\d.]+%) of the photo) outside it: nothing to fill from \(at least (?P<least>\d+%) must stay\); "
       r"mask less of the photo",
       lambda m: ("蒙版" + (f"扩展 {m['grow']} 像素后" if m["grow"] else "")
                  + (f"之外只剩照片的 {m['left']}" if m["left"] else "之外没有剩下任何像素")
                  + f"：没有可用于填充的内容（至少要保留 {m['least']}）；请少涂抹一些")),
    _m("mask.shape", r"(?P<what>mask(?: \S+)?) has shape (?P<shape>\([^)]*\)); expected .*",
       "蒙版的形状 {shape} 不对：应为灰度、RGB 或 RGBA 图像"),
    _m("mask.dtype", r"(?P<what>mask(?: \S+)?) has unsupported dtype (?P<dtype>\w+)", "蒙版的数据类型 {dtype} 不受支持"),
    # -- warnings (shown on the page by .notices)
    _m("warn.coverage", r"(?P<what>mask(?: \S+)?) covers (?P<share>\d+%) of the photo \(over (?P<limit>\d+%)\): the "
       r"fill has little context and quality drops; mask less at a time",
       "蒙版覆盖了照片的 {share}（超过 {limit}）：可参考的周围内容太少，效果会变差；请每次少涂抹一些"),
    _m("warn.first_frame", r"animated (?P<format>\w+): only its first frame is read", "动画 {format}：只读取第一帧"),
    _m("warn.icc", r"ICC profile unusable \((?P<detail>.*)\); converting CMYK naively",
       "ICC 色彩配置文件无法使用：按简单方式转换 CMYK"),
    _m("warn.exif", r"(?:TIFF )?EXIF metadata unreadable, (?:not written to the TIFF|dropped) \((?P<detail>.*)\)",
       "EXIF 元数据无法读取，已丢弃"),
    _m("warn.tifffile", r"tifffile: (?P<detail>.*)", "TIFF 文件有问题（tifffile 的提示已记录在服务器日志中）"),
    # -- option errors (tessera.options.parse_options: "option <field>: <pydantic's words> (got <value>)")
    _m("option.got", r"(?P<what>.+) \(got (?P<got>.*)\)", "{what!t}（收到 {got}）"),
    _m("option.should_be", r"Input should be (?P<words>.+?)(?:, (?P<reason>unable to [a-z ]+|got a number with a "
       r"fractional part))?", _should_be),
    _m("option.path", r"Input is not a valid path.*", "不是有效的路径"),
    _m("option.at_least", r"must be at least (?P<n>\d+) px or auto", "必须至少为 {n} 像素，或 auto"),
    _m("option.at_least0", r"must be >= (?P<n>\d+)(?: or auto)?", "必须 ≥ {n}"),
    _m("option.memory", r"not a memory size: (?P<value>.*) \(examples: (?P<examples>[^)]*)\)",
       "不是内存大小：{value}（例如 {examples}）"),
    _m("option.memory_negative", r"memory size must be positive, got (?P<value>.*)", "内存大小必须为正数，收到 {value}"),
    _m("option.unknown_choice", r"unknown (?P<what>precision|blend|strategy) (?P<value>'[^']*') \(choose from "
       r"(?P<list>[^)]*)\)", lambda m: f"未知的{_CHOICE_WORDS[m['what']]} {m['value']}：可选 {m['list']}"),
    _m("option.device", r"unknown device(?:: | (?P<value>'[^']*') \()choose from (?P<list>[^)]*)\)?",
       lambda m: "未知设备" + (f" {m['value']}" if m["value"] else "") + f"：可选 {m['list']}"),
    _m("option.device_missing", r"device (?P<value>'[^']*') requested but (?P<what>CUDA|MPS) is not available here",
       "请求了设备 {value}，但本机没有可用的 {what}"),
    _m("option.device_index", r"device (?P<value>'[^']*') does not exist \((?P<n>\d+) CUDA devices\)",
       "设备 {value} 不存在（本机有 {n} 个 CUDA 设备）"),
    _m("option.sharpen", r"applies to the weight-free method only, not to model (?P<model>'[^']*')",
       "只适用于无权重方法，不适用于模型 {model}"),
    _m("option.faces_words", r"face indices are whole numbers (?:separated by commas|from 0), e\.g\. (?P<eg>.*)",
       "人脸编号是从 0 开始、用逗号分隔的整数，例如 {eg}"),
    _m("option.faces_many", r"at most (?P<n>[\d,]+) face indices", "最多 {n} 个人脸编号"),
    _m("option.faces_both", r"options (?P<a>\w+) and (?P<b>\w+) both choose faces: give one of them",
       lambda m: f"{_zh_label(m['a'])} 和 {_zh_label(m['b'])} 都在选择人脸：只能用其中一个"),
    _m("option.faces_aligned", r"(?P<a>" + _LABEL + r") chooses among detected faces, but an aligned input is one face "
       r"and nothing is detected", "{a} 用于在检测到的人脸中选择，但已对齐的输入只有一张人脸，不做检测"),
    _m("option.background_none", r"background 'none' keeps the photo's size, but (?:upscale|(?P<label>" + _LABEL
       + r")) is (?P<n>" + _NUM + r"): (?:choose|use) (?:background|(?P<bg>" + _LABEL
       + r")) lanczos or an upscaling model",
       lambda m: f"背景 'none' 保持照片原尺寸，但{m['label'] or '“整体放大倍数”'}为 {m['n']}："
       f"请把{m['bg'] or '“背景处理”'}设为 lanczos 或某个放大模型"),
    _m("option.face_missing", r"face (?P<faces>[\d, ]+) not found: the detector found (?P<n>\d+)(?P<rest>.*)",
       "找不到人脸 {faces}：检测器找到 {n} 张"),
    _m("option.strategy_full", r"(?P<label>" + _LABEL + r") full runs the whole (?P<dims>" + _DIMS + r") photo.*",
       "{label} 为 full 时整张 {dims} 照片一次处理，超出限制：请改用 auto（围绕空洞裁剪）或 resize"),
    _m("option.unknown", r"unknown option (?P<name>'[^']*')", "未知选项 {name}"),
    _m("option.tile", r"tile(?: pad| batch)? must be .*", "分块设置无效"),
    _m("option.budget_inpaint", r"the memory budget does not fit even a (?P<dims>" + _DIMS + r") inpainting pass; "
       r"raise (?P<label>" + _LABEL + ")", "内存预算连一次 {dims} 的修复都放不下；请调高 {label}"),
    # -- hints that replaced CLI-only clauses (.i18n msg.*), when they stand alone in a clause
    _m("hint.use_smaller", r"choose a smaller (?P<what>.*)", "请选择更小的{what!t}"),
    # -- "Save regions for hand editing" and "Re-stitch edited regions" (.regions), their entries kept beside them
    *(_m(kind, pattern, template) for kind, pattern, template in REGIONS_ZH),
    # -- a job's phase, alone or before a detail ("saving result photo.png"): last, as it starts many messages
    _m("progress.phase", r"(?i:(?P<words>" + _PHASE_WORDS + r"))(?:…|\.\.\.)?(?:[ :] ?(?P<rest>[^·\s].*?))?(?:…|\.\.\.)?",
       _phase),
)

def _base(path: str) -> str:
    """The last part of a server path (a message shows the file, not where the server keeps it)."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def _zh_label(name: str) -> str:
    """The Chinese label of the control for option ``name``, quoted; the name itself where there is none."""
    return control_label(name, "zh-CN") or name


_CHOICE_WORDS = {"precision": "精度", "blend": "拼接方式", "strategy": "处理策略"}
_TASKS = {"upscale": "放大", "inpaint": "修复", "face": "人脸", "faces": "人脸", "deblur": "去模糊"}
_STRATEGIES = {"auto": "自动", "crop": "裁剪", "resize": "缩放", "full": "整张"}
_WHAT = {"photo": "照片", "mask": "蒙版"}

_FILE_HEAD = re.compile(r"(?P<head>[^:;()“”·]*?\.[A-Za-z0-9]{1,11}|“[^”]+”|(?:mask|the mask)(?: [^:;·]+)?): "
                        r"(?P<rest>.+)")
_PART_SEPARATORS = (" · ", "; ")
_CLAUSE_JOIN = {" · ": " · ", "; ": "；"}
_LETTER = re.compile(r"[A-Za-z]")
_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
_FILE_NAME = re.compile(r"[^:;()“”]+\.[A-Za-z0-9]{2,11}")
# a file name inside a message (微信图片.jpg, 照片-inpainted.png): its own Chinese says nothing of the message's
_NAMED_FILE = re.compile(r"[^\s:;()“”'\"]+\.(?i:png|jpe?g|webp|tiff?|bmp|gif|zip|json)\b")


def translate(message: str) -> str:
    """``message`` (English, with the page's labels already in, see :func:`for_page`) in Simplified Chinese.

    """
    said = _translate(message.strip())
    return said if said is not None else f"{LEAD_IN}{message.strip()}"


def _translate(message: str) -> str | None:
    """The Chinese of ``message``, or None where no entry matches it (or a part of it)."""
    if not _LETTER.search(message):
        return message  # numbers, sizes, signs: as they are
    for entry in MESSAGES:
        match = entry.pattern.fullmatch(message)
        if match is not None:
            return entry.render(match)
    if " " not in message or _FILE_NAME.fullmatch(message):
        return message  # a name (file, model) or a value: as it is
    headed = _FILE_HEAD.fullmatch(message)  # before the clauses: a file's reason may hold a ";"
    if headed is not None:
        rest = _translate(headed["rest"])
        if rest is not None:
            head = headed["head"]
            head = "蒙版" if head.startswith(("mask", "the mask")) and "." not in head else head
            return f"{head}：{rest}"
    for separator in _PART_SEPARATORS:
        if separator in message:
            raw = message.split(separator)
            parts = [_translate(part) for part in raw]
            joined = _CLAUSE_JOIN[separator].join(part if part is not None else f"{LEAD_IN}{words}"
                                                  for part, words in zip(parts, raw))
            return joined if any(part is not None for part in parts) else None
    status = re.fullmatch(r"✓ (?P<rest>.+)", message)
    if status is not None:
        rest = _translate(status["rest"])
        return None if rest is None else f"✓ {rest}"
    return None


def already_chinese(message: str) -> bool:
    """Whether ``message`` is worded in Chinese already: Chinese outside the file names it mentions."""
    return bool(_CJK.search(_NAMED_FILE.sub("", message)))
