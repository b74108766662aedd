// The vendored libraries the console loads with classic <script> tags (untyped here).
declare const CodeMirror: any;
declare const uPlot: any;
