"""Pictures in memory and on disk: the first and the last step of every task.

Import from the modules; this package imports none of them, so that ``tessera.image.pixels`` stays free of any
decoder. The modules, each building only on those listed before it:

- ``pixels``: :class:`~tessera.image.pixels.Picture` (RGB pixels, alpha kept aside, ICC profile and EXIF carried
  along) and the dtype conversions (``to_float``, ``from_float``, ``convert_dtype``, ``single_channel``); numpy only.
- ``decode``: what every decoder shares: the pixel limit checked from the header, the decoded pieces, band-by-band
  helpers.
- ``exif``: EXIF orientation (applied to decoded pixels by ``assemble``, then reset to 1) and the EXIF surgery
  TIFF files need on the way out.
- ``png``: PNG's own structure (header, truncated rows, chunks, 16-bit gray+alpha encoding), no codec.
- ``pillow``: identification and decoding with Pillow's plugins of the allowed formats only, into memory tessera
  provides.
- ``png16``: 16-bit PNG at full depth through Pillow's 8-bit samples (two passes).
- ``tiff``: TIFF decoding through tifffile, OpenCV's libtiff as the fallback.
- ``read``: ``load_image`` and ``read_image_size``, the entry points of reading; the limits and the readable formats.
- ``atomic``: ``write_atomically`` and ``copy_atomically`` (temporary file, sync, rename), ``same_file``, the
  sweep of what killed writers left.
- ``write``: ``save_image``, the encoders, and the checks that refuse an output before any work (``check_output``,
  ``check_output_size``, ``check_output_folder``, ``check_quality``).
- ``regions``: lazy region reading of huge TIFF files and the tiled BigTIFF writer, for streamed tasks.
"""
