"""Weight-free methods: they work out of the box, with no download, and are the defaults of each task.

``lanczos``: Lanczos-4 upscaling with an optional unsharp mask; ``inpaint``: OpenCV Telea and PatchMatch;
``face``: a classical clean-up of aligned faces (denoise, local contrast, mild unsharp mask).
"""
