"""The web UI's labels and messages in English and Simplified Chinese, and which of the two a request wants.

Gradio translates in the browser: components get :class:`gradio.i18n.I18nData` keys (``t("tab.inpaint")``), and
the page shows the language Gradio's frontend takes from ``navigator.language``. The page's language switch
(:mod:`.language`) stores the choice in the cookie ``tessera_lang`` (:data:`COOKIE`) and a script in the page's
head makes ``navigator.language`` say it before Gradio starts, so the choice holds across reloads. Option labels
and help texts are keyed by the option's field name in :mod:`tessera.options` (``opt.<field>`` and
``opt.<field>.info``), so every control built from the schema has both languages.

Messages made on the server (errors, warnings, progress, status) are made in English, the CLI's words; the page
gets them in the language of the request (:func:`request_language`: the cookie first, then ``Accept-Language``),
with the CLI's flags replaced by the page's control labels and, in Chinese, translated whole (see :mod:`.wording`).
"""
from __future__ import annotations

from typing import Any

LANGUAGES = ("en", "zh-CN")

# key: (English, Simplified Chinese)
_TEXT: dict[str, tuple[str, str]] = {
    "app.title": ("## tessera: photo restoration", "## tessera：照片修复"),
    "app.intro": (
        ("Remove objects and defects, enhance faces, upscale photos of any size. Everything runs on this "
         "computer; results are kept in the output folder and deleted after the retention period."),
        "去除物体与瑕疵、增强人脸、放大任意尺寸的照片。全部在本机运行；结果保存在输出目录中，超过保留期限后自动删除。"),
    "app.language_hint": ("Language: the switch at the top of the page (kept for this browser)",
                          "语言：使用页面顶部的切换按钮（本浏览器会记住所选语言）"),
    "app.language_switch": ("Language", "语言"),
    "tab.inpaint": ("Inpaint", "消除修复"),
    "tab.faces": ("Faces", "人脸增强"),
    "tab.upscale": ("Upscale", "放大"),
    "photo": ("Photo", "照片"),
    "detected": ("Detected faces (click one to choose it)", "检测到的人脸（点击以选择）"),
    "result": ("Result at full resolution (download)", "全分辨率结果（下载）"),
    "format": ("Output format", "输出格式"),
    "format.info": ("auto: the photo's own format (PNG, JPEG, WEBP or TIFF; PNG for others)",
                    "auto：与照片相同的格式（PNG、JPEG、WEBP 或 TIFF；其他用 PNG）"),
    "quality": ("Quality (JPEG, WEBP)", "质量（JPEG、WEBP）"),
    "run.inpaint": ("Inpaint", "开始修复"),
    "run.enhance": ("Enhance faces", "增强人脸"),
    "run.upscale": ("Upscale", "开始放大"),
    "cancel": ("Cancel", "取消"),
    # the Inpaint tab's editor (see editing.py; the viewer's own buttons are in viewer.py)
    "mask.upload": ("Upload a mask (white = fill)", "上传蒙版（白色 = 填充）"),
    "mask.download": ("The last mask (download)", "上次使用的蒙版（下载）"),
    "rerun": ("Run the last mask again", "再次运行上次的蒙版"),
    "undo.result": ("Undo result", "撤销结果"),
    "redo.result": ("Redo result", "重做结果"),
    "advanced": ("Advanced settings", "高级设置"),
    "advanced.engine": ("Engine", "运行设置"),
    "advanced.inpaint": ("Inpainting", "修复"),
    "advanced.faces": ("Faces", "人脸"),
    "faces_found": ("Faces found", "检测到人脸数"),
    # hints that replace, in error messages, what the CLI says about its own flags (see wording.py)
    "msg.mask_size": ("paint the mask on the page, or upload a mask of the photo's size",
                      "请在页面上涂抹蒙版，或上传与照片尺寸相同的蒙版"),
    "msg.server_limit": ("this server's limit: use a smaller file", "这是本服务器的限制：请使用更小的文件"),
    "msg.server_setting": ("a setting of the server, not of this page: ask whoever runs it",
                           "这是服务器的设置，不在本页面中：请联系服务器的管理员"),
    # titles and fixed texts of the messages the server shows (see .jobs.user_errors, .notices)
    "msg.error": ("Error", "错误"),
    "msg.warning": ("Warning", "警告"),
    "msg.cancelled": ("Cancelled", "已取消"),
    "msg.cancelled_detail": ("Cancelled: the job was stopped before it finished", "已取消：任务在完成前被停止"),
    "msg.out_of_memory": ("out of memory: lower Max memory or Tile size in Advanced settings, or use a smaller photo",
                          "内存不足：请在“高级设置”中调低“最大内存”或“分块大小”，或使用更小的照片"),
    "msg.internal": ("internal error", "内部错误"),
    # options (labels: opt.<field>; help: opt.<field>.info)
    "opt.device": ("Device", "设备"),
    "opt.device.info": ("auto: CUDA, then MPS, then CPU", "auto：优先 CUDA，其次 MPS，最后 CPU"),
    "opt.precision": ("Precision", "精度"),
    "opt.precision.info": ("auto: fp16/bf16 on a GPU where the model supports it; fp32 on the CPU (bf16 where "
                           "the CPU computes it natively and it was measured faster and within 2 levels)",
                           "auto：GPU 上在模型支持时用 fp16/bf16；CPU 上用 fp32（若 CPU 原生支持 bf16，且实测更快、"
                           "误差不超过 2 级，则用 bf16）"),
    "opt.max_memory": ("Max memory", "最大内存"),
    "opt.max_memory.info": ("budget for device memory, e.g. 4G; empty: what is free",
                            "设备内存预算，例如 4G；留空表示使用当前空闲内存"),
    "opt.tile": ("Tile size", "分块大小"),
    "opt.tile.info": ("pixels, or auto (largest that fits the memory budget)", "像素数，或 auto（内存预算内最大的分块）"),
    "opt.tile_pad": ("Tile pad", "分块边距"),
    "opt.tile_pad.info": ("context around each tile in pixels, or auto (measured)", "每个分块周围的上下文像素，或 auto（自动测量）"),
    "opt.tile_batch": ("Tile batch", "分块批量"),
    "opt.tile_batch.info": ("tiles (or regions, faces) per batch, or auto", "每批处理的分块（或区域、人脸）数，或 auto"),
    "opt.blend": ("Blend", "拼接方式"),
    "opt.blend.info": ("crop: exact for local networks; feather: also blend the inner overlap; auto: crop, or "
                       "feather for networks that are not local",
                       "crop：对局部网络精确；feather：同时羽化内部重叠区；auto：局部网络用 crop，非局部网络用 feather"),
    "opt.model": ("Model", "模型"),
    "opt.model.info": ("a model from the list: the catalog's, and the files of the server's model folders",
                       "从列表中选择模型：模型目录中的模型，以及服务器模型文件夹中的文件"),
    "opt.scale": ("Scale", "放大倍数"),
    "opt.scale.info": ("auto: the model's own factor (2 for Lanczos); up to 8", "auto：模型自身倍数（Lanczos 为 2）；最大 8"),
    "opt.sharpen": ("Sharpen", "锐化"),
    "opt.sharpen.info": ("unsharp-mask amount for the weight-free method", "无权重方法的 USM 锐化强度"),
    "opt.strategy": ("Strategy", "处理策略"),
    "opt.strategy.info": ("how regions are run: crop around holes, resize, or the full photo",
                          "区域处理方式：围绕空洞裁剪、缩放或整张照片"),
    "opt.crop_margin": ("Crop margin", "裁剪边距"),
    "opt.crop_margin.info": ("context around each hole in pixels, or auto", "每个空洞周围的上下文像素，或 auto"),
    "opt.max_size": ("Max size", "最大尺寸"),
    "opt.max_size.info": ("never run the network above this many pixels per side, or auto",
                          "网络输入每边不超过此像素数，或 auto"),
    "opt.grow": ("Mask grow", "蒙版扩展"),
    "opt.grow.info": ("dilate the mask by this many pixels", "将蒙版向外扩展的像素数"),
    "opt.feather": ("Mask feather", "蒙版羽化"),
    "opt.feather.info": ("blend band around the mask, outside it, in pixels", "蒙版边缘外侧的过渡带宽度（像素）"),
    "opt.upscale": ("Upscale the photo", "整体放大倍数"),
    "opt.upscale.info": ("output scale of the whole photo", "整张照片的输出倍数"),
    "opt.background": ("Background", "背景处理"),
    "opt.background.info": ("none, lanczos, or an upscaling model for the background", "none、lanczos，或用于背景的放大模型"),
    "opt.strength": ("Strength", "强度"),
    "opt.strength.info": ("blend of the restored face with the original; empty: the model's own (0.8 for "
                          "gpen-bfr-2048), else 1", "修复后人脸与原图的混合比例；留空：用模型自带的值（gpen-bfr-2048 为 0.8），否则为 1"),
    "opt.faces": ("Faces to restore", "要修复的人脸"),
    "opt.faces.info": ("indices as drawn on the detected faces, e.g. 0,2; click a face to add or remove it; "
                       "empty: all", "检测图上标出的编号，如 0,2；点击人脸可加入或移除；留空：全部"),
    "opt.aligned": ("Aligned face input", "已对齐的人脸输入"),
    "opt.aligned.info": ("the photo is one aligned face crop: no detection, the whole image is restored",
                         "照片是一张已对齐的人脸裁剪图：不做检测，修复整张图"),
    "opt.only_center_face": ("Only the centre face", "只修复中心人脸"),
    "opt.only_center_face.info": ("restore only the face nearest the photo's centre", "只修复最靠近照片中心的人脸"),
    "opt.only_largest_face": ("Only the largest face", "只修复最大的人脸"),
    "opt.only_largest_face.info": ("restore only the largest face", "只修复最大的一张人脸"),
    "opt.fidelity": ("Fidelity", "保真度"),
    "opt.fidelity.info": ("CodeFormer fidelity weight", "CodeFormer 保真权重"),
    "opt.face_batch": ("Face batch", "人脸批量"),
    "opt.face_batch.info": ("faces per batch, or auto", "每批处理的人脸数，或 auto"),
    "opt.min_face": ("Smallest face", "最小人脸"),
    "opt.min_face.info": ("ignore faces smaller than this many pixels", "忽略小于此像素数的人脸"),
    "opt.min_score": ("Detection threshold", "检测阈值"),
    "opt.min_score.info": ("ignore detections scored below this", "忽略置信度低于此值的检测结果"),
    "opt.detector": ("Face detector", "人脸检测器"),
    "opt.detector.info": ("auto: YuNet when installed, else scikit-image's cascade",
                          "auto：已安装时用 YuNet，否则用 scikit-image 级联检测器"),
    "opt.detect_tiles": ("Detect in tiles", "分块检测"),
    "opt.detect_tiles.info": ("finer passes: auto (only where small faces were found), always (full resolution)",
                              "更精细的检测：auto（只在发现小人脸处），always（全分辨率）"),
    "opt.deblur_method": ("Deblur method", "去模糊方法"),
    "opt.deblur_method.info": ("hyper-Laplacian (sharpens, default), Wiener (soft) or Richardson-Lucy",
                                "超拉普拉斯先验（锐化，默认）、维纳滤波（柔和）或 Richardson-Lucy 迭代"),
    "opt.deblur": ("Deblur", "去模糊"),
    "opt.deblur.info": ("estimate and remove motion blur first", "先估计并去除运动模糊"),
    "opt.parse_mask": ("Paste mask", "贴回遮罩"),
    "opt.parse_mask.info": ("auto: face parsing (ParseNet) when its weights are cached, else the soft box; "
                            "parsenet; box", "auto：已缓存 ParseNet 权重时用人脸解析，否则用柔和方框；parsenet；box"),
    "opt.suppress_hf": ("Suppress high frequencies", "抑制高频"),
    "opt.suppress_hf.info": ("smooth ringing in the result", "平滑结果中的振铃伪影"),
}


# The model menus' labels that are words, not names (see .models): label -> Chinese. A catalog model not yet
# downloaded is labelled "<name> (not downloaded)".
_CHOICE_TEXT = {
    "Lanczos (weight-free)": "Lanczos（无权重方法）",
    "weight-free clean-up": "无权重清理",
}
_NOT_DOWNLOADED = (" (not downloaded)", "（未下载）")


def _choice_text() -> dict[str, tuple[str, str]]:
    """``{key: (English, Chinese)}`` of the menus' labels (``choice.<label>``), the catalog's names included."""
    from ..models.catalog import model_names

    table = {f"choice.{label}": (label, chinese) for label, chinese in _CHOICE_TEXT.items()}
    for name in model_names():
        label = name + _NOT_DOWNLOADED[0]
        table[f"choice.{label}"] = (label, name + _NOT_DOWNLOADED[1])
    return table


def choice_labels(choices: list[tuple[str, str]]) -> list[tuple[Any, str]]:
    """A model menu's ``(label, value)`` pairs (:meth:`.models.ModelMenu.choices`) with the labels that are words
    made translation keys, so that the dropdown shows them in the page's language; names stay as they are."""
    from gradio.i18n import I18nData

    known = _choice_text()
    return [(I18nData(f"choice.{label}") if f"choice.{label}" in known else label, value) for label, value in choices]


def _pairs() -> dict[str, tuple[str, str]]:
    """Every label key: this module's, and those of the region tools (:data:`.regions_text.TEXT`)."""
    from .regions_text import TEXT as REGIONS

    return {**_TEXT, **REGIONS}


def translations() -> dict[str, dict[str, str]]:
    """``{locale: {key: text}}`` for :class:`gradio.I18n` (the labels, and the model menus' labels)."""
    pairs = {**_pairs(), **_choice_text()}
    return {lang: {key: pair[index] for key, pair in pairs.items()} for index, lang in enumerate(LANGUAGES)}


def has_key(key: str) -> bool:
    return key in _pairs()


def text(key: str, language: str = "en") -> str:
    """The text of ``key`` in ``language`` (one of :data:`LANGUAGES`; any other gets English), for server-side use."""
    index = LANGUAGES.index(language) if language in LANGUAGES else 0
    return _pairs()[key][index]


def language_of(accept_language: str | None) -> str:
    """The language of :data:`LANGUAGES` a browser prefers, from its ``Accept-Language`` header; English otherwise.

    Any Chinese tag (``zh``, ``zh-CN``, ``zh-Hans``...) picks Simplified Chinese, the only Chinese we have.
    """
    ranked = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag.lower()))
    for _quality, _position, tag in sorted(ranked):
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en") or tag == "*":
            return "en"
    return "en"


COOKIE = "tessera_lang"  # the page's language switch stores the chosen language here (see .language)


def cookie_language(value: str | None) -> str | None:
    """The language of :data:`LANGUAGES` that the cookie's ``value`` names (``zh-CN``, ``zh``, ``en``...), or None."""
    tag = (value or "").strip().lower()
    if tag.startswith("zh"):
        return "zh-CN"
    if tag.startswith("en"):
        return "en"
    return None


def request_language(cookies: str | None, accept_language: str | None) -> str:
    """The language of a request: the page's cookie (:data:`COOKIE`, from the ``Cookie`` header ``cookies``) when
    it names one of :data:`LANGUAGES`, else the browser's ``Accept-Language``, else English."""
    from http.cookies import CookieError, SimpleCookie

    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookies or "")
    except CookieError:  # a malformed Cookie header: as if there were none
        jar = SimpleCookie()
    chosen = cookie_language(jar[COOKIE].value) if COOKIE in jar else None
    return chosen or language_of(accept_language)


def make_i18n() -> Any:
    """A :class:`gradio.I18n` holding both languages (``"en"`` and ``"zh-CN"``)."""
    import gradio as gr

    tables = translations()
    return gr.I18n(**{"en": tables["en"], "zh-CN": tables["zh-CN"]})


def t(key: str) -> Any:
    """The translation key ``key`` for a component label, info or Markdown value."""
    from gradio.i18n import I18nData

    if key not in _pairs():
        raise KeyError(f"no translation for {key!r}")
    return I18nData(key)
