// The browser side of Aula's shared whiteboard and notes: one bundle, built once and committed
// (build.sh), so running Aula needs no front-end build. Exposes window.AulaCollab.
import * as Y from "yjs";
import Quill from "quill";
import QuillCursors from "quill-cursors";
import { QuillBinding } from "y-quill";

Quill.register("modules/cursors", QuillCursors);

window.AulaCollab = { Y, Quill, QuillCursors, QuillBinding };
