// The output-folder page (sv3d_trt/viewer/page.py writes the markup and the inline data).
// A classic script over the SV3D_THREE bundle: file:// pages may not import ES modules.
// World frame of cameras.json: z up, object at the origin; camera_to_world maps OpenCV camera
// axes (x right, y down, z forward) to world. window.sv3dViewer exposes the state to tests.
(function () {
  "use strict";
  const T = window.SV3D_THREE;
  const data = JSON.parse(document.getElementById("sv3d-data").textContent);
  const state = { frame: 0, playing: false, cameraCount: 0, meshLoaded: false, meshError: null, setFrame: null };
  window.sv3dViewer = state;

  // The folder's name, from the URL (.../<folder>/index.html from disk, .../<job>/ from a server).
  const parts = location.pathname.split("/").filter(Boolean);
  if (parts.length && /\.html?$/.test(parts[parts.length - 1])) parts.pop();
  if (parts.length) {
    const name = decodeURIComponent(parts[parts.length - 1]);
    document.getElementById("title").textContent = name;
    document.title = "sv3d-trt: " + name;
  }

  const BACKGROUND = 0x2a2e36;
  const CAMERA_COLOUR = 0x6f8fb0;
  const CURRENT_COLOUR = 0xffa030;

  // A 3D view on a canvas: renders on demand (orbit drags, frame changes), not in a loop.
  function makeView(canvas) {
    const renderer = new T.WebGLRenderer({ canvas: canvas, antialias: true, preserveDrawingBuffer: true });
    renderer.setPixelRatio(window.devicePixelRatio || 1);
    renderer.setSize(canvas.clientWidth || canvas.width, canvas.clientHeight || canvas.height, false);
    const scene = new T.Scene();
    scene.background = new T.Color(BACKGROUND);
    const camera = new T.PerspectiveCamera(35, canvas.width / canvas.height, 0.01, 100);
    camera.up.set(0, 0, 1); // z up, as cameras.json
    const controls = new T.OrbitControls(camera, canvas);
    const view = { renderer: renderer, scene: scene, camera: camera, controls: controls };
    view.render = function () { renderer.render(scene, camera); };
    view.lookAt = function (centre, distance, direction) {
      camera.position.copy(direction.clone().normalize().multiplyScalar(distance).add(centre));
      controls.target.copy(centre);
      controls.update();
      view.render();
    };
    controls.addEventListener("change", view.render);
    scene.add(new T.AmbientLight(0xffffff, 1.2));
    const sun = new T.DirectionalLight(0xffffff, 1.8);
    sun.position.set(2, -3, 4);
    scene.add(sun);
    return view;
  }

  // Without WebGL the page still shows the orbit: the canvas gives way to a note.
  function tryView(canvas) {
    try {
      return makeView(canvas);
    } catch (error) {
      const note = document.createElement("p");
      note.className = "dim no-webgl";
      note.textContent = "3D view unavailable here (" + (error && error.message || error) + ")";
      canvas.replaceWith(note);
      return null;
    }
  }

  // One camera as line segments: the pinhole to the four image corners at depth `depth`, the
  // image rectangle, and a small triangle on the top edge (image rows grow downwards).
  function frustum(frame, K, depth) {
    const w = K.width, h = K.height;
    const pt = function (u, v, d) { return [(u - K.cx) / K.fx * d, (v - K.cy) / K.fy * d, d]; };
    const c = [0, 0, 0], tl = pt(0, 0, depth), tr = pt(w, 0, depth), br = pt(w, h, depth), bl = pt(0, h, depth);
    const up = pt(w / 2, -0.25 * h, depth), ul = pt(0.35 * w, 0, depth), ur = pt(0.65 * w, 0, depth);
    const segments = [c, tl, c, tr, c, br, c, bl, tl, tr, tr, br, br, bl, bl, tl, ul, up, up, ur];
    const M = frame.camera_to_world;
    const positions = [];
    segments.forEach(function (p) {
      for (let r = 0; r < 3; r++) positions.push(M[r][0] * p[0] + M[r][1] * p[1] + M[r][2] * p[2] + M[r][3]);
    });
    const geometry = new T.BufferGeometry();
    geometry.setAttribute("position", new T.Float32BufferAttribute(positions, 3));
    return new T.LineSegments(geometry, new T.LineBasicMaterial({ color: CAMERA_COLOUR }));
  }

  // 1. the orbit: frame image, label, scrubber, play
  const frames = data.frames;
  const image = document.getElementById("frame-image");
  const label = document.getElementById("frame-label");
  const scrubber = document.getElementById("scrubber");
  const play = document.getElementById("play");
  let camerasView = null, frustums = [], timer = null;

  function setFrame(i) {
    i = ((i % frames.length) + frames.length) % frames.length;
    const f = frames[i];
    state.frame = i;
    image.src = f.file;
    scrubber.value = String(i);
    label.textContent = "frame " + i + " · elevation " + f.elevation_deg.toFixed(1) + "° · azimuth " +
      f.azimuth_deg.toFixed(1) + "°" + (i === data.input_view_index ? " (input view)" : "");
    frustums.forEach(function (line, k) {
      line.material.color.setHex(k === i ? CURRENT_COLOUR : CAMERA_COLOUR);
      line.renderOrder = k === i ? 1 : 0;
    });
    if (camerasView) camerasView.render();
  }
  state.setFrame = setFrame;

  function setPlaying(on) {
    state.playing = on;
    play.textContent = on ? "pause" : "play";
    if (timer !== null) clearInterval(timer);
    timer = on ? setInterval(function () { setFrame(state.frame + 1); }, 100) : null; // 10 fps, as orbit.mp4
  }

  if (frames.length) {
    scrubber.addEventListener("input", function () { setPlaying(false); setFrame(parseInt(scrubber.value, 10)); });
    play.addEventListener("click", function () { setPlaying(!state.playing); });
    document.addEventListener("keydown", function (e) {
      if ((e.key === "ArrowRight" || e.key === "ArrowLeft") && e.target !== scrubber) { // it steps itself
        setPlaying(false);
        setFrame(state.frame + (e.key === "ArrowRight" ? 1 : -1));
      }
    });

    // 2. the cameras around the object
    camerasView = tryView(document.getElementById("cameras-canvas"));
    if (camerasView) {
      let radius = 0;
      frames.forEach(function (f) {
        const line = frustum(f, data.intrinsics, 0.35);
        frustums.push(line);
        camerasView.scene.add(line);
        const M = f.camera_to_world;
        radius = Math.max(radius, Math.hypot(M[0][3], M[1][3], M[2][3]));
      });
      state.cameraCount = frustums.length;
      camerasView.scene.add(new T.AxesHelper(0.3));
      camerasView.lookAt(new T.Vector3(0, 0, 0), 3.3 * radius, new T.Vector3(1.0, -1.4, 1.1));
    }
    setFrame(0);
  }

  // 3. the mesh: the GLB is inlined as base64 (its texture inside), parsed from memory
  const meshView = data.has_mesh ? tryView(document.getElementById("mesh-canvas")) : null;
  if (meshView) {
    const text = document.getElementById("sv3d-mesh").textContent.trim();
    const bytes = Uint8Array.from(atob(text), function (ch) { return ch.charCodeAt(0); });
    new T.GLTFLoader().parse(bytes.buffer, "", function (gltf) {
      const object = gltf.scene;
      meshView.scene.add(object);
      if (camerasView) { camerasView.scene.add(object.clone()); camerasView.render(); }
      const box = new T.Box3().setFromObject(object);
      const size = box.getSize(new T.Vector3()).length() || 1;
      meshView.lookAt(box.getCenter(new T.Vector3()), 1.6 * size, new T.Vector3(1.0, -1.2, 0.6));
      document.getElementById("wireframe").addEventListener("change", function (e) {
        object.traverse(function (node) {
          if (node.isMesh) node.material.wireframe = e.target.checked;
        });
        meshView.render();
        if (camerasView) camerasView.render();
      });
      state.meshLoaded = true;
      // Textures decode asynchronously: draw again once they are in.
      setTimeout(meshView.render, 100);
    }, function (error) {
      state.meshError = String(error && error.message || error);
      console.error("mesh: " + state.meshError);
    });
  }
  document.body.dataset.ready = "1";
})();
