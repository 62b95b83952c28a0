// The pieces of three.js the viewer uses, bundled into one classic script (an IIFE that sets
// the global SV3D_THREE): Chromium refuses ES-module imports from file:// pages, classic
// scripts inlined into the page are fine. Rebuild with build.sh (see VENDORED.md).
export {
  AmbientLight, BufferGeometry, Color, DirectionalLight, Float32BufferAttribute, Group, LineBasicMaterial,
  LineSegments, Mesh, MeshBasicMaterial, PerspectiveCamera, Scene, SphereGeometry, Vector3, WebGLRenderer,
  Box3, AxesHelper, SRGBColorSpace,
} from 'three';
export { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
export { OrbitControls } from 'three/addons/controls/OrbitControls.js';
