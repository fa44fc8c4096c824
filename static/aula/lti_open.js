// A launch shown as the whole page (the LMS opened Aula in a new window): go straight on. Inside the LMS's
// iframe the person clicks "Open in Aula" (browsers block Aula's sign-in cookie in third-party frames).
(function () {
  "use strict";
  var link = document.getElementById("lti-continue");
  if (link && window.top === window.self) {
    window.location.replace(link.getAttribute("href"));
  }
})();
