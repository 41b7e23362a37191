"""Moving data between stores: which host carries a step (`endpoints`), which strategy
carries a copy (`service`, `strategies`), and how an image becomes the base of volumes
on a primary storage (`install`). Services call down into it; it calls the plugins."""
