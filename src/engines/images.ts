// What the heavy tier builds once per machine and the public API exposes: Debian images (both
// backends) and the microVM's kernel, initrd and disk artefacts. One module per concern, so
// index.ts does not reach into engine folders.
export { buildImage, imageLabel, listImages, removeImage } from "./heavy/image.js";
export { IMAGE_PRESETS, IMAGE_PRESET_NAMES, type ImagePreset } from "./heavy/presets.js";
export type { ImageInfo, BuildOptions as ImageBuildOptions } from "./heavy/image.js";
export { buildMicrovmArtefacts } from "./microvm/artefacts.js";
export type { MicrovmArtefacts, MicrovmBuildOptions } from "./microvm/artefacts.js";
